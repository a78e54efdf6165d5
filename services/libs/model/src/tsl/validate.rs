//! Checks device data (property posts, event posts, service replies) and cloud property sets against a
//! [`Tsl`]. A refusal names the offending field by its path (`colour.red`, `schedule[1].hour`), which
//! the edge sends to the device with code 460.
//!
//! Aliyun rules kept here: unknown properties in a post are dropped, not refused; a property value may be
//! plain or `{"value": v, "time": ms}`; `bool` is 0 or 1 (JSON `true`/`false` accepted too); `date` is UTC
//! milliseconds as a string (an integer accepted too); a float or double accepts integers. `step` is a
//! display hint and is not enforced on values, and a struct value may omit members (partial structs).
//! The 24-hour window on `time` needs a clock and is the caller's.
//!
//! An object whose keys are `value` and optionally `time` is always read as the `{value, time}` form,
//! even for a struct with a member named `value`: that is the form Alink documents, and struct
//! members named `value` are rare enough not to justify guessing.

use std::fmt;

use serde_json::{Map, Value};

use super::{AccessMode, DataType, Param, Tsl};

/// The outcome of checking a property post.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertyCheck {
    /// Properties of the TSL whose values conform, as the device sent them (plain or `{value, time}`).
    pub accepted: Map<String, Value>,
    /// Identifiers the TSL does not define; Aliyun drops these and still answers 200.
    pub unknown: Vec<String>,
    /// The first non-conforming value; when set, the whole post is refused (460).
    pub error: Option<DataError>,
}

/// Why a value does not conform: the path of the field (starting with the property or parameter
/// identifier) and the reason, shown to devices as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DataError {
    pub field: String,
    pub reason: String,
}

/// A refusal found while descending into a value: the path is built on the way back out.
struct Mismatch {
    /// Path segments from the innermost outwards.
    segments: Vec<Segment>,
    reason: String,
}

enum Segment {
    Member(String),
    Index(usize),
}

// === impl Tsl ===

impl Tsl {
    /// Checks the `params` of a property post (`thing.event.property.post`).
    pub fn check_properties(&self, params: &Map<String, Value>) -> PropertyCheck {
        let mut check = PropertyCheck::default();
        for (identifier, value) in params {
            let Some(property) = self.property(identifier) else {
                check.unknown.push(identifier.clone());
                continue;
            };
            match check_timed(&property.data_type, value) {
                Ok(()) => {
                    check.accepted.insert(identifier.clone(), value.clone());
                }
                Err(mismatch) => {
                    check.error.get_or_insert_with(|| mismatch.into_error(identifier));
                }
            }
        }
        check
    }

    /// Checks the `params` of an event post, either Alink's `{"value": {..}, "time": ms}` or the bare
    /// object, against the event's `outputData`. Unknown members are refused.
    pub fn check_event(&self, identifier: &str, params: &Value) -> Result<(), DataError> {
        let event = self.event(identifier).ok_or_else(|| DataError {
            field: identifier.to_owned(),
            reason: "not an event of the thing model".to_owned(),
        })?;
        let params = match timed(params) {
            Some((value, time)) => {
                check_time(time).map_err(|m| m.into_error("time"))?;
                value
            }
            None => params,
        };
        check_members(&event.output_data, params).map_err(|m| m.into_root_error("params"))
    }

    /// Checks the `data` of a service reply against the service's `outputData`.
    pub fn check_service_output(&self, identifier: &str, data: &Value) -> Result<(), DataError> {
        let service = self.service(identifier).ok_or_else(|| unknown_service(identifier))?;
        if data.is_null() {
            // Replies without `data` carry no output; absent members are allowed anyway.
            return Ok(());
        }
        check_members(&service.output_data, data).map_err(|m| m.into_root_error("data"))
    }

    /// Checks the `params` of a service invocation against the service's `inputData`.
    pub fn check_service_input(&self, identifier: &str, params: &Value) -> Result<(), DataError> {
        let service = self.service(identifier).ok_or_else(|| unknown_service(identifier))?;
        if params.is_null() {
            return Ok(());
        }
        check_members(&service.input_data, params).map_err(|m| m.into_root_error("params"))
    }

    /// Checks a cloud → device property set (`thing.service.property.set`): every item must be a
    /// read-write property of the TSL with a plain conforming value.
    pub fn check_set(&self, items: &Map<String, Value>) -> Result<(), DataError> {
        for (identifier, value) in items {
            let refuse = |reason: &str| DataError { field: identifier.clone(), reason: reason.to_owned() };
            let property = self.property(identifier).ok_or_else(|| refuse("not a property of the thing model"))?;
            if property.access_mode == AccessMode::ReadOnly {
                return Err(refuse("read-only property"));
            }
            check_value(&property.data_type, value).map_err(|m| m.into_error(identifier))?;
        }
        Ok(())
    }
}

fn unknown_service(identifier: &str) -> DataError {
    DataError { field: identifier.to_owned(), reason: "not a service of the thing model".to_owned() }
}

/// Splits Alink's `{"value": v, "time": ms}` form; any other shape is a plain value.
fn timed(value: &Value) -> Option<(&Value, Option<&Value>)> {
    let obj = value.as_object()?;
    let inner = obj.get("value")?;
    if obj.keys().all(|k| k == "value" || k == "time") { Some((inner, obj.get("time"))) } else { None }
}

fn check_timed(data_type: &DataType, value: &Value) -> Result<(), Mismatch> {
    match timed(value) {
        Some((inner, time)) => {
            check_time(time).map_err(|m| m.within(Segment::Member("time".to_owned())))?;
            check_value(data_type, inner).map_err(|m| m.within(Segment::Member("value".to_owned())))
        }
        None => check_value(data_type, value),
    }
}

fn check_time(time: Option<&Value>) -> Result<(), Mismatch> {
    match time {
        None => Ok(()),
        Some(time) if is_millis(time) => Ok(()),
        Some(_) => Err(Mismatch::new("not a UTC millisecond timestamp")),
    }
}

/// Checks an object's members against parameters: unknown members are refused, absent ones allowed.
fn check_members(params: &[Param], value: &Value) -> Result<(), Mismatch> {
    let Value::Object(members) = value else {
        return Err(Mismatch::new(format!("{} is not an object", kind(value))));
    };
    for (identifier, member) in members {
        let within = || Segment::Member(identifier.clone());
        let Some(param) = params.iter().find(|p| &p.identifier == identifier) else {
            return Err(Mismatch::new("unknown member").within(within()));
        };
        check_value(&param.data_type, member).map_err(|m| m.within(within()))?;
    }
    Ok(())
}

fn check_value(data_type: &DataType, value: &Value) -> Result<(), Mismatch> {
    match data_type {
        DataType::Int(specs) => {
            let n = integer(value)?;
            let n = i32::try_from(n).map_err(|_| Mismatch::new(format!("{n} is outside the 32-bit integer range")))?;
            in_range(n, specs.min, specs.max)
        }
        DataType::Float(specs) | DataType::Double(specs) => {
            let n = value.as_f64().ok_or_else(|| Mismatch::new(format!("{} is not a number", kind(value))))?;
            in_range(n, specs.min, specs.max)
        }
        DataType::Text(specs) => {
            let s = value.as_str().ok_or_else(|| Mismatch::new(format!("{} is not a string", kind(value))))?;
            let len = s.chars().count();
            if len > specs.length as usize {
                return Err(Mismatch::new(format!("{len} characters, longer than {}", specs.length)));
            }
            Ok(())
        }
        DataType::Enum(values) => {
            let n = integer(value)?;
            if i32::try_from(n).is_ok_and(|n| values.contains_key(&n)) {
                return Ok(());
            }
            let allowed: Vec<String> = values.keys().map(i32::to_string).collect();
            Err(Mismatch::new(format!("{n} is not one of {}", allowed.join(", "))))
        }
        DataType::Bool(_) => match value {
            Value::Bool(_) => Ok(()),
            Value::Number(n) if matches!(n.as_i64(), Some(0 | 1)) => Ok(()),
            _ => Err(Mismatch::new(format!("{} is not 0 or 1", kind(value)))),
        },
        DataType::Date => {
            if is_millis(value) {
                Ok(())
            } else {
                Err(Mismatch::new(format!("{} is not a UTC millisecond timestamp", kind(value))))
            }
        }
        DataType::Struct(members) => check_members(members, value),
        DataType::Array(specs) => {
            let Value::Array(items) = value else {
                return Err(Mismatch::new(format!("{} is not an array", kind(value))));
            };
            if items.len() > specs.size as usize {
                return Err(Mismatch::new(format!("{} items, more than {}", items.len(), specs.size)));
            }
            for (i, item) in items.iter().enumerate() {
                check_value(&specs.item, item).map_err(|m| m.within(Segment::Index(i)))?;
            }
            Ok(())
        }
    }
}

/// A JSON integer (`5`, not `5.0` nor `"5"`).
fn integer(value: &Value) -> Result<i64, Mismatch> {
    match value {
        Value::Number(n) if n.is_u64() && !n.is_i64() => {
            Err(Mismatch::new(format!("{n} is outside the 32-bit integer range")))
        }
        Value::Number(n) => n.as_i64().ok_or_else(|| Mismatch::new(format!("{n} is not an integer"))),
        _ => Err(Mismatch::new(format!("{} is not an integer", kind(value)))),
    }
}

fn in_range<N: PartialOrd + fmt::Display + Copy>(n: N, min: Option<N>, max: Option<N>) -> Result<(), Mismatch> {
    if let Some(min) = min.filter(|&min| n < min) {
        return Err(Mismatch::new(format!("{n} is below min {min}")));
    }
    if let Some(max) = max.filter(|&max| n > max) {
        return Err(Mismatch::new(format!("{n} is above max {max}")));
    }
    Ok(())
}

/// UTC milliseconds: a non-negative integer, or a string of one (Aliyun's `date`).
fn is_millis(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_u64().is_some(),
        // `u64::from_str` also takes a leading `+`, which is not a timestamp.
        Value::String(s) => s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok(),
        _ => false,
    }
}

/// Names the offending value briefly, never echoing a long string or a whole object to the device.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 32 => format!("\"{s}\""),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

// === impl Mismatch ===

impl Mismatch {
    fn new(reason: impl Into<String>) -> Self {
        Self { segments: Vec::new(), reason: reason.into() }
    }

    fn within(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    /// The error for a value under the top-level field `root`.
    fn into_error(self, root: &str) -> DataError {
        let mut field = root.to_owned();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Member(name) => {
                    field.push('.');
                    field.push_str(name);
                }
                Segment::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        DataError { field, reason: self.reason }
    }

    /// The error for an object whose members are the top-level fields (event params, service data):
    /// the first member names the field, `whole` when the object itself is wrong.
    fn into_root_error(mut self, whole: &str) -> DataError {
        match self.segments.pop() {
            Some(Segment::Member(first)) => self.into_error(&first),
            Some(Segment::Index(i)) => self.into_error(&format!("{whole}[{i}]")),
            None => self.into_error(whole),
        }
    }
}
