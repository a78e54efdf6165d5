//! TSL JSON → [`Tsl`], refusing the first offending field with its path and the reason.
//!
//! Hand-walked over `serde_json::Value` rather than derived, so that every refusal names the exact
//! field (`properties[2].dataType.specs.min`) in words a product owner can act on.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::{
    AccessMode, ArraySpecs, BoolSpecs, CallType, DataType, Event, EventType, FloatSpecs, IntSpecs, MAX_ARRAY_SIZE,
    MAX_IDENTIFIER_LEN, MAX_TEXT_LENGTH, Param, Property, Service, TextSpecs, Tsl, TslError,
};

type Parsed<T> = Result<T, TslError>;

/// Identifiers Aliyun reserves for its own methods and the `{value, time}` form.
const RESERVED: [&str; 6] = ["set", "get", "post", "property", "time", "value"];

/// Where a data type sits, which decides what it may be (Aliyun's nesting rules).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// A property, event or service parameter: any type.
    Top,
    /// A struct member: neither a struct nor an array.
    StructMember,
    /// An array item: int, float, double, text or struct.
    ArrayItem,
}

pub(super) fn tsl(value: &Value) -> Parsed<Tsl> {
    let obj = object(value, "tsl")?;
    let schema = optional_string(obj, "schema", "schema")?;
    let profile = match obj.get("profile") {
        None | Some(Value::Null) => None,
        Some(Value::Object(profile)) => Some(profile.clone()),
        Some(_) => return Err(invalid("profile", "not an object")),
    };
    let mut seen = HashMap::new();

    let mut properties = Vec::new();
    for (i, v) in list(obj, "properties", "properties")?.iter().enumerate() {
        let path = format!("properties[{i}]");
        let property = property(v, &path)?;
        feature_identifier(&mut seen, &property.identifier, &path)?;
        properties.push(property);
    }

    let mut events = Vec::new();
    for (i, v) in list(obj, "events", "events")?.iter().enumerate() {
        // Aliyun's generated property-post event; posts are checked against the properties.
        if v.get("identifier").and_then(Value::as_str) == Some("post") {
            continue;
        }
        let path = format!("events[{i}]");
        let event = event(v, &path)?;
        feature_identifier(&mut seen, &event.identifier, &path)?;
        events.push(event);
    }

    let mut services = Vec::new();
    for (i, v) in list(obj, "services", "services")?.iter().enumerate() {
        // Aliyun's generated property set/get services; sets are checked against the properties.
        if matches!(v.get("identifier").and_then(Value::as_str), Some("set" | "get")) {
            continue;
        }
        let path = format!("services[{i}]");
        let service = service(v, &path)?;
        feature_identifier(&mut seen, &service.identifier, &path)?;
        services.push(service);
    }

    Ok(Tsl { schema, profile, properties, events, services })
}

fn property(value: &Value, path: &str) -> Parsed<Property> {
    let obj = object(value, path)?;
    let identifier = identifier(obj, path)?;
    let access_path = format!("{path}.accessMode");
    let access_mode = match required_string(obj, "accessMode", &access_path)? {
        "r" => AccessMode::ReadOnly,
        "rw" => AccessMode::ReadWrite,
        _ => return Err(invalid(&access_path, "must be \"r\" or \"rw\"")),
    };
    Ok(Property {
        identifier,
        name: name(obj, path)?,
        access_mode,
        required: optional_bool(obj, "required", path)?,
        desc: optional_string(obj, "desc", &format!("{path}.desc"))?,
        data_type: data_type_field(obj, path, Nesting::Top)?,
    })
}

fn event(value: &Value, path: &str) -> Parsed<Event> {
    let obj = object(value, path)?;
    let identifier = identifier(obj, path)?;
    let type_path = format!("{path}.type");
    let event_type = match required_string(obj, "type", &type_path)? {
        "info" => EventType::Info,
        "alert" => EventType::Alert,
        "error" => EventType::Error,
        _ => return Err(invalid(&type_path, "must be \"info\", \"alert\" or \"error\"")),
    };
    Ok(Event {
        identifier,
        name: name(obj, path)?,
        event_type,
        required: optional_bool(obj, "required", path)?,
        desc: optional_string(obj, "desc", &format!("{path}.desc"))?,
        output_data: params(obj, "outputData", path)?,
        method: optional_string(obj, "method", &format!("{path}.method"))?,
    })
}

fn service(value: &Value, path: &str) -> Parsed<Service> {
    let obj = object(value, path)?;
    let identifier = identifier(obj, path)?;
    let call_path = format!("{path}.callType");
    let call_type = match required_string(obj, "callType", &call_path)? {
        "sync" => CallType::Sync,
        "async" => CallType::Async,
        _ => return Err(invalid(&call_path, "must be \"sync\" or \"async\"")),
    };
    Ok(Service {
        identifier,
        name: name(obj, path)?,
        call_type,
        required: optional_bool(obj, "required", path)?,
        desc: optional_string(obj, "desc", &format!("{path}.desc"))?,
        input_data: params(obj, "inputData", path)?,
        output_data: params(obj, "outputData", path)?,
        method: optional_string(obj, "method", &format!("{path}.method"))?,
    })
}

/// An event's or service's parameter list (absent means none).
fn params(obj: &Map<String, Value>, key: &str, path: &str) -> Parsed<Vec<Param>> {
    let path = format!("{path}.{key}");
    param_list(list(obj, key, &path)?, &path, Nesting::Top)
}

fn param_list(items: &[Value], path: &str, nesting: Nesting) -> Parsed<Vec<Param>> {
    let mut seen = HashMap::new();
    let mut params = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let obj = object(v, &path)?;
        let identifier = identifier(obj, &path)?;
        if let Some(first) = seen.insert(identifier.clone(), path.clone()) {
            return Err(invalid(
                &format!("{path}.identifier"),
                format!("duplicate identifier \"{identifier}\" (first at {first})"),
            ));
        }
        params.push(Param { identifier, name: name(obj, &path)?, data_type: data_type_field(obj, &path, nesting)? });
    }
    Ok(params)
}

fn data_type_field(obj: &Map<String, Value>, path: &str, nesting: Nesting) -> Parsed<DataType> {
    let path = format!("{path}.dataType");
    match obj.get("dataType") {
        None | Some(Value::Null) => Err(invalid(&path, "missing")),
        Some(v) => data_type(v, &path, nesting),
    }
}

fn data_type(value: &Value, path: &str, nesting: Nesting) -> Parsed<DataType> {
    let obj = object(value, path)?;
    let type_path = format!("{path}.type");
    let type_name = required_string(obj, "type", &type_path)?;
    let refusal = match (nesting, type_name) {
        (Nesting::StructMember, "struct" | "array") => Some("a struct member cannot be a struct or an array"),
        (Nesting::ArrayItem, "array") => Some("an array cannot hold arrays"),
        (Nesting::ArrayItem, "enum" | "bool" | "date") => {
            Some("array items must be int, float, double, text or struct")
        }
        _ => None,
    };
    if let Some(reason) = refusal {
        return Err(invalid(&type_path, reason));
    }
    let specs_path = format!("{path}.specs");
    let specs = obj.get("specs").filter(|v| !v.is_null());
    let data_type = match type_name {
        "int" => DataType::Int(int_specs(specs_object(specs, &specs_path)?, &specs_path)?),
        "float" => DataType::Float(float_specs(specs_object(specs, &specs_path)?, &specs_path)?),
        "double" => DataType::Double(float_specs(specs_object(specs, &specs_path)?, &specs_path)?),
        "text" => {
            let specs = specs_object(specs, &specs_path)?;
            let length = count(specs, "length", &specs_path, MAX_TEXT_LENGTH)?.unwrap_or(MAX_TEXT_LENGTH);
            DataType::Text(TextSpecs { length })
        }
        "enum" => DataType::Enum(enum_specs(specs_object(specs, &specs_path)?, &specs_path)?),
        "bool" => DataType::Bool(bool_specs(specs_object(specs, &specs_path)?, &specs_path)?),
        "date" => DataType::Date,
        "struct" => {
            let members = match specs {
                Some(Value::Array(members)) => members,
                Some(_) => return Err(invalid(&specs_path, "not an array of members")),
                None => return Err(invalid(&specs_path, "missing")),
            };
            if members.is_empty() {
                return Err(invalid(&specs_path, "a struct needs at least one member"));
            }
            DataType::Struct(param_list(members, &specs_path, Nesting::StructMember)?)
        }
        "array" => {
            let specs = specs_object(specs, &specs_path)?;
            let size = count(specs, "size", &specs_path, MAX_ARRAY_SIZE)?
                .ok_or_else(|| invalid(&format!("{specs_path}.size"), "missing"))?;
            let item_path = format!("{specs_path}.item");
            let item = match specs.get("item") {
                None | Some(Value::Null) => return Err(invalid(&item_path, "missing")),
                Some(item) => data_type(item, &item_path, Nesting::ArrayItem)?,
            };
            DataType::Array(ArraySpecs { size, item: Box::new(item) })
        }
        other => {
            return Err(invalid(
                &type_path,
                format!(
                    "unknown type \"{other}\" (expected int, float, double, text, enum, bool, date, struct or array)"
                ),
            ));
        }
    };
    Ok(data_type)
}

fn int_specs(specs: &Map<String, Value>, path: &str) -> Parsed<IntSpecs> {
    let min = spec_int(specs, "min", path)?;
    let max = spec_int(specs, "max", path)?;
    let step = spec_int(specs, "step", path)?;
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(invalid(&format!("{path}.min"), format!("min {min} is greater than max {max}")));
    }
    if step.is_some_and(|step| step <= 0) {
        return Err(invalid(&format!("{path}.step"), "must be greater than 0"));
    }
    Ok(IntSpecs {
        min,
        max,
        step,
        unit: optional_string(specs, "unit", &format!("{path}.unit"))?,
        unit_name: optional_string(specs, "unitName", &format!("{path}.unitName"))?,
    })
}

fn float_specs(specs: &Map<String, Value>, path: &str) -> Parsed<FloatSpecs> {
    let min = spec_float(specs, "min", path)?;
    let max = spec_float(specs, "max", path)?;
    let step = spec_float(specs, "step", path)?;
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(invalid(&format!("{path}.min"), format!("min {min} is greater than max {max}")));
    }
    if step.is_some_and(|step| step <= 0.0) {
        return Err(invalid(&format!("{path}.step"), "must be greater than 0"));
    }
    Ok(FloatSpecs {
        min,
        max,
        step,
        unit: optional_string(specs, "unit", &format!("{path}.unit"))?,
        unit_name: optional_string(specs, "unitName", &format!("{path}.unitName"))?,
    })
}

fn enum_specs(specs: &Map<String, Value>, path: &str) -> Parsed<BTreeMap<i32, String>> {
    if specs.is_empty() {
        return Err(invalid(path, "an enum needs at least one value"));
    }
    let mut values = BTreeMap::new();
    for (key, name) in specs {
        let key_path = format!("{path}.{key}");
        let Ok(n) = key.parse::<i32>() else {
            return Err(invalid(&key_path, "enum key is not an integer"));
        };
        let Value::String(name) = name else {
            return Err(invalid(&key_path, "not a string"));
        };
        if values.insert(n, name.clone()).is_some() {
            return Err(invalid(&key_path, format!("duplicate enum value {n}")));
        }
    }
    Ok(values)
}

fn bool_specs(specs: &Map<String, Value>, path: &str) -> Parsed<BoolSpecs> {
    let mut out = BoolSpecs::default();
    for (key, name) in specs {
        let key_path = format!("{path}.{key}");
        let Value::String(name) = name else {
            return Err(invalid(&key_path, "not a string"));
        };
        match key.as_str() {
            "0" => out.false_name = Some(name.clone()),
            "1" => out.true_name = Some(name.clone()),
            _ => return Err(invalid(&key_path, "a bool only names 0 and 1")),
        }
    }
    Ok(out)
}

/// An integer spec: Aliyun writes `"10"`, a bare JSON integer is accepted too.
fn spec_int(specs: &Map<String, Value>, key: &str, path: &str) -> Parsed<Option<i32>> {
    let path = format!("{path}.{key}");
    let n = match specs.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => n,
            Err(_) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                return Err(invalid(&path, "not an integer"));
            }
            Err(_) => return Err(invalid(&path, "not a number")),
        },
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| invalid(&path, "not an integer"))?,
        Some(_) => return Err(invalid(&path, "not a number")),
    };
    i32::try_from(n).map(Some).map_err(|_| invalid(&path, "outside the 32-bit integer range"))
}

/// A decimal spec: Aliyun writes `"0.5"`, a bare JSON number is accepted too.
fn spec_float(specs: &Map<String, Value>, key: &str, path: &str) -> Parsed<Option<f64>> {
    let path = format!("{path}.{key}");
    let n = match specs.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
    };
    // `str::parse` accepts "inf" and "NaN"; neither is a bound.
    n.filter(|n| n.is_finite()).map(Some).ok_or_else(|| invalid(&path, "not a number"))
}

/// A count spec (`size`, `length`) within `1..=max`.
fn count(specs: &Map<String, Value>, key: &str, path: &str, max: u32) -> Parsed<Option<u32>> {
    let Some(n) = spec_int(specs, key, path)? else {
        return Ok(None);
    };
    match u32::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(&format!("{path}.{key}"), format!("must be between 1 and {max}"))),
    }
}

fn specs_object<'a>(specs: Option<&'a Value>, path: &str) -> Parsed<&'a Map<String, Value>> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match specs {
        None => Ok(EMPTY.get_or_init(Map::new)),
        Some(Value::Object(specs)) => Ok(specs),
        Some(_) => Err(invalid(path, "not an object")),
    }
}

/// Records a property, event or service identifier; Aliyun requires them unique across all three.
fn feature_identifier(seen: &mut HashMap<String, String>, identifier: &str, path: &str) -> Parsed<()> {
    let id_path = format!("{path}.identifier");
    if RESERVED.contains(&identifier) {
        return Err(invalid(&id_path, format!("\"{identifier}\" is reserved by the thing model")));
    }
    if let Some(first) = seen.insert(identifier.to_owned(), path.to_owned()) {
        return Err(invalid(&id_path, format!("duplicate identifier \"{identifier}\" (first at {first})")));
    }
    Ok(())
}

fn identifier(obj: &Map<String, Value>, path: &str) -> Parsed<String> {
    let path = format!("{path}.identifier");
    let id = required_string(obj, "identifier", &path)?;
    if !is_identifier(id) {
        return Err(invalid(
            &path,
            format!(
                "\"{id}\" is not an identifier (a letter or _ then letters, digits or _, at most {MAX_IDENTIFIER_LEN})"
            ),
        ));
    }
    Ok(id.to_owned())
}

/// `[A-Za-z_][A-Za-z0-9_]{0,49}`.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= MAX_IDENTIFIER_LEN
}

/// A display name; Aliyun's console requires one, but it carries no meaning here, so absent is empty.
fn name(obj: &Map<String, Value>, path: &str) -> Parsed<String> {
    Ok(optional_string(obj, "name", &format!("{path}.name"))?.unwrap_or_default())
}

fn object<'a>(value: &'a Value, path: &str) -> Parsed<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| invalid(path, "not an object"))
}

fn list<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Parsed<&'a [Value]> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(path, "not an array")),
    }
}

fn required_string<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Parsed<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(invalid(path, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(path, "not a string")),
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str, path: &str) -> Parsed<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(path, "not a string")),
    }
}

/// `required` flags; Aliyun writes JSON booleans.
fn optional_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Parsed<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(&format!("{path}.{key}"), "not true or false")),
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> TslError {
    TslError::Invalid { path: path.to_owned(), reason: reason.into() }
}
