//! The thing model (TSL, Aliyun's Thing Specification Language): a product's properties, events and
//! services in Aliyun's TSL JSON, parsed with every refusal naming the field path, and the checks that
//! device data (property posts, event posts, service replies) and cloud property sets conform to it.
//!
//! A product without a TSL accepts any properties, events and service replies: that decision belongs
//! to the caller, which simply does not call the checks here when it holds no `Tsl`.
//!
//! Aliyun generates three standard functions from the properties: the `post` event
//! (`thing.event.property.post`) and the `set` and `get` services (`thing.service.property.set|get`).
//! Exported TSLs carry them (the `get` service even lists bare identifiers as its `inputData`); parsing
//! drops them, since property posts and sets are checked against the properties themselves, and
//! [`Tsl::to_json`] does not write them back. Aliyun's reserved words (`set`, `get`, `post`,
//! `property`, `time`, `value`) are refused as property, event and service identifiers.
//!
//! Numbers in specs are read from Aliyun's strings (`"min": "0"`) or bare JSON numbers and written
//! back as strings. Missing bounds are open (an `int` stays within 32 bits), a missing text `length`
//! is 10240, an array's `size` and `item` are required. Array items may be int, float, double, text or
//! struct; struct members may be neither struct nor array (Aliyun's nesting rules).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

mod parse;
mod validate;

pub use validate::{DataError, PropertyCheck};

/// Longest identifier of a property, event, service or parameter (Aliyun's limit).
pub const MAX_IDENTIFIER_LEN: usize = 50;
/// Largest `size` of an array data type.
pub const MAX_ARRAY_SIZE: u32 = 512;
/// Largest `length` of a text data type, in characters.
pub const MAX_TEXT_LENGTH: u32 = 10240;

/// A product's thing model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tsl {
    /// Aliyun's `schema` URL, kept as given.
    pub schema: Option<String>,
    /// Aliyun's `profile` object (`productKey`, `version`, ...), kept as given.
    pub profile: Option<Map<String, Value>>,
    pub properties: Vec<Property>,
    pub events: Vec<Event>,
    pub services: Vec<Service>,
}

/// Why a TSL document is refused: the field path (`properties[2].dataType.specs.min`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TslError {
    #[error("invalid json: {0}")]
    Json(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A property: state the device reports and, when `rw`, the cloud may set.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub identifier: String,
    pub name: String,
    pub access_mode: AccessMode,
    pub required: bool,
    pub desc: Option<String>,
    pub data_type: DataType,
}

/// Whether the cloud may set a property (`rw`) or only read it (`r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    ReadOnly,
    ReadWrite,
}

/// An event the device posts on `thing/event/{identifier}/post`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub identifier: String,
    pub name: String,
    pub event_type: EventType,
    pub required: bool,
    pub desc: Option<String>,
    pub output_data: Vec<Param>,
    /// `thing.event.{identifier}.post` in Aliyun's exports; kept as given.
    pub method: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Info,
    Alert,
    Error,
}

/// A service the cloud invokes on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub identifier: String,
    pub name: String,
    pub call_type: CallType,
    pub required: bool,
    pub desc: Option<String>,
    pub input_data: Vec<Param>,
    pub output_data: Vec<Param>,
    /// `thing.service.{identifier}` in Aliyun's exports; kept as given.
    pub method: Option<String>,
}

/// `sync` services are invoked over RRPC, `async` ones on `thing/service/{identifier}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallType {
    Sync,
    Async,
}

/// A named, typed member: an event or service parameter, or a struct member.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub identifier: String,
    pub name: String,
    pub data_type: DataType,
}

/// A TSL data type with its specs.
#[derive(Debug, Clone, PartialEq)]
pub enum DataType {
    Int(IntSpecs),
    Float(FloatSpecs),
    Double(FloatSpecs),
    Text(TextSpecs),
    /// Allowed integer values and their display names.
    Enum(BTreeMap<i32, String>),
    Bool(BoolSpecs),
    /// UTC milliseconds, written as a string by Aliyun.
    Date,
    /// Members; never a struct or an array themselves (Aliyun's nesting rule).
    Struct(Vec<Param>),
    Array(ArraySpecs),
}

/// Specs of an `int`: bounds within the 32-bit range; a missing bound is the range's end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntSpecs {
    pub min: Option<i32>,
    pub max: Option<i32>,
    pub step: Option<i32>,
    pub unit: Option<String>,
    pub unit_name: Option<String>,
}

/// Specs of a `float` or `double`: finite bounds; a missing bound is unbounded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatSpecs {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub unit: Option<String>,
    pub unit_name: Option<String>,
}

/// Specs of a `text`: the longest value in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSpecs {
    pub length: u32,
}

/// Display names of a `bool`'s `0` and `1`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoolSpecs {
    pub false_name: Option<String>,
    pub true_name: Option<String>,
}

/// Specs of an `array`: at most `size` items of type `item` (int, float, double, text or struct).
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySpecs {
    pub size: u32,
    pub item: Box<DataType>,
}

// === impl Tsl ===

impl Tsl {
    /// Parses and checks Aliyun TSL JSON, refusing it with the first offending field's path and reason.
    pub fn parse(json: &[u8]) -> Result<Tsl, TslError> {
        let value: Value = serde_json::from_slice(json).map_err(|e| TslError::Json(e.to_string()))?;
        Self::from_json(&value)
    }

    /// Reads and checks TSL JSON that is already a `Value` (a request body, a stored record), like
    /// [`Tsl::parse`].
    pub fn from_json(value: &Value) -> Result<Tsl, TslError> {
        parse::tsl(value)
    }

    /// The TSL as Aliyun writes it (numbers in specs as strings), as returned by `GET .../thing-model`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        if let Some(schema) = &self.schema {
            out.insert("schema".into(), Value::String(schema.clone()));
        }
        if let Some(profile) = &self.profile {
            out.insert("profile".into(), Value::Object(profile.clone()));
        }
        out.insert("properties".into(), self.properties.iter().map(Property::to_json).collect());
        out.insert("events".into(), self.events.iter().map(Event::to_json).collect());
        out.insert("services".into(), self.services.iter().map(Service::to_json).collect());
        Value::Object(out)
    }

    pub fn property(&self, identifier: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.identifier == identifier)
    }

    pub fn event(&self, identifier: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.identifier == identifier)
    }

    pub fn service(&self, identifier: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.identifier == identifier)
    }
}

impl Serialize for Tsl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tsl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        parse::tsl(&value).map_err(serde::de::Error::custom)
    }
}

// === impl Property ===

impl Property {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("identifier".into(), self.identifier.clone().into());
        out.insert("name".into(), self.name.clone().into());
        out.insert("accessMode".into(), self.access_mode.as_str().into());
        out.insert("required".into(), self.required.into());
        if let Some(desc) = &self.desc {
            out.insert("desc".into(), desc.clone().into());
        }
        out.insert("dataType".into(), self.data_type.to_json());
        Value::Object(out)
    }
}

// === impl AccessMode ===

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "r",
            Self::ReadWrite => "rw",
        }
    }
}

// === impl Event ===

impl Event {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("identifier".into(), self.identifier.clone().into());
        out.insert("name".into(), self.name.clone().into());
        out.insert("type".into(), self.event_type.as_str().into());
        out.insert("required".into(), self.required.into());
        if let Some(desc) = &self.desc {
            out.insert("desc".into(), desc.clone().into());
        }
        out.insert("outputData".into(), params_to_json(&self.output_data));
        if let Some(method) = &self.method {
            out.insert("method".into(), method.clone().into());
        }
        Value::Object(out)
    }
}

// === impl EventType ===

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Alert => "alert",
            Self::Error => "error",
        }
    }
}

// === impl Service ===

impl Service {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("identifier".into(), self.identifier.clone().into());
        out.insert("name".into(), self.name.clone().into());
        out.insert("callType".into(), self.call_type.as_str().into());
        out.insert("required".into(), self.required.into());
        if let Some(desc) = &self.desc {
            out.insert("desc".into(), desc.clone().into());
        }
        out.insert("inputData".into(), params_to_json(&self.input_data));
        out.insert("outputData".into(), params_to_json(&self.output_data));
        if let Some(method) = &self.method {
            out.insert("method".into(), method.clone().into());
        }
        Value::Object(out)
    }
}

// === impl CallType ===

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

// === impl Param ===

impl Param {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("identifier".into(), self.identifier.clone().into());
        out.insert("name".into(), self.name.clone().into());
        out.insert("dataType".into(), self.data_type.to_json());
        Value::Object(out)
    }
}

fn params_to_json(params: &[Param]) -> Value {
    params.iter().map(Param::to_json).collect()
}

// === impl DataType ===

impl DataType {
    /// The `type` string Aliyun uses.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Double(_) => "double",
            Self::Text(_) => "text",
            Self::Enum(_) => "enum",
            Self::Bool(_) => "bool",
            Self::Date => "date",
            Self::Struct(_) => "struct",
            Self::Array(_) => "array",
        }
    }

    fn to_json(&self) -> Value {
        let specs = match self {
            Self::Int(s) => number_specs_json(s.min, s.max, s.step, &s.unit, &s.unit_name),
            Self::Float(s) | Self::Double(s) => number_specs_json(s.min, s.max, s.step, &s.unit, &s.unit_name),
            Self::Text(s) => serde_json::json!({ "length": s.length.to_string() }),
            Self::Enum(values) => {
                Value::Object(values.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect())
            }
            Self::Bool(s) => {
                let mut out = Map::new();
                if let Some(name) = &s.false_name {
                    out.insert("0".into(), name.clone().into());
                }
                if let Some(name) = &s.true_name {
                    out.insert("1".into(), name.clone().into());
                }
                Value::Object(out)
            }
            Self::Date => Value::Object(Map::new()),
            Self::Struct(members) => params_to_json(members),
            Self::Array(s) => serde_json::json!({ "size": s.size.to_string(), "item": s.item.to_json() }),
        };
        serde_json::json!({ "type": self.type_name(), "specs": specs })
    }
}

fn number_specs_json<N: ToString>(
    min: Option<N>,
    max: Option<N>,
    step: Option<N>,
    unit: &Option<String>,
    unit_name: &Option<String>,
) -> Value {
    let mut out = Map::new();
    for (key, n) in [("min", min), ("max", max), ("step", step)] {
        if let Some(n) = n {
            out.insert(key.into(), n.to_string().into());
        }
    }
    if let Some(unit) = unit {
        out.insert("unit".into(), unit.clone().into());
    }
    if let Some(unit_name) = unit_name {
        out.insert("unitName".into(), unit_name.clone().into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
