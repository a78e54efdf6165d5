//! The Aliyun device shadow (PROTOCOL.md B.5): the shadow document, the device requests on
//! `/shadow/update/{pk}/{dn}`, the replies and `control` pushes on `/shadow/get/{pk}/{dn}`, and the
//! rules that turn one stored document and one request into the next document.
//!
//! Pure code: the caller reads the stored document, calls [`handle_device_request`] (or
//! [`apply_desired`] for the cloud API), compare-and-sets the returned document and, on a conflict,
//! calls again with the fresh one. Times are Unix seconds, as in Aliyun's documents.
//!
//! # Document
//!
//! `{"state":{"desired":{..},"reported":{..}},"metadata":{"desired":{"k":{"timestamp":s}},"reported":{..}},
//! "timestamp":s,"version":n}`. An empty `desired` or `reported` is omitted from both `state` and
//! `metadata`, as Aliyun documents ("desired is only present when the shadow has a desired state"),
//! so a new document is `{"state":{},"metadata":{},"timestamp":0,"version":0}`. `timestamp` is the
//! time of the last accepted write; every attribute's metadata holds the time it was last written.
//!
//! # Requests and rules
//!
//! - `update` sets attributes per top-level key: a value (object, array or scalar) replaces the old
//!   one whole (nested objects are not merged, arrays are not patched) and JSON `null` removes the
//!   key. Only JSON `null` removes: the string `"null"` is stored as a string.
//! - `delete` removes the attributes it names; their values are meant to be `null` or `"null"` (the
//!   C SDK sends the string) and are not looked at.
//! - In both, a whole section given as `"null"` or `null` (`{"reported":"null"}`) clears it. The C SDK
//!   acknowledges a `control` with `{"method":"update","state":{"desired":"null"}}`, so `update`
//!   accepts `desired` as well as `reported`, and so does `delete` (Aliyun allows `state.desired`).
//! - Every attribute the request names gets `now` as its metadata timestamp, changed value or not:
//!   the timestamp says when the attribute was last reported or set.
//! - When the device reports a value equal to the desired one, `desired` is kept: Aliyun leaves it
//!   to the device (the C SDK sends `"desired":"null"`) or the app to clear it.
//! - `version` must be an integer greater than the stored version; the accepted document takes the
//!   request's version (Aliyun: "the shadow's version is updated to the request's"). `-1` clears the
//!   whole shadow, then applies the request, and leaves version 0 (Aliyun: "clears the shadow, accepts
//!   the request and sets the version to 0"); so the next write needs version 1 or more. A missing or
//!   non-integer version, or one below -1, is refused with 403.
//! - `get` ignores `version` (the C SDK sends one on every request) and answers 407 when the shadow
//!   has neither desired nor reported attributes.
//! - At most [`MAX_ATTRIBUTES`] attributes per section, counted in the resulting document.
//!
//! # Replies
//!
//! Replies echo the request's `clientToken` at the top level when it had one: the C SDK matches a
//! reply to its request by that token and drops replies without one. Error replies carry
//! `errorcode` as a string, as in Aliyun's examples (the C SDK reads it with `atoi`, so either
//! works). A 403 reply also carries the shadow's current `version` at the top level, which Aliyun's
//! examples do not show: the C SDK adopts any larger `version` it sees on `/shadow/get`, so a device
//! whose version fell behind catches up instead of failing forever.
//!
//! Checks run in the order of the C SDK's codes: 400 payload not a JSON object, 401 no `method`,
//! 406 unknown `method`, 402 no `state` object, 403 bad `version`, 404 neither `reported` nor
//! `desired`, 405 a section that is an empty object or not an object, 408 too many attributes.
//! 407 is `get` on an empty shadow; 500 is left to callers whose store fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[cfg(test)]
mod tests;

/// Most attributes one section (`desired` or `reported`) may hold. Aliyun documents a limit on the
/// shadow's size rather than a count; 128 follows the C SDK's 408 "too many attributes".
pub const MAX_ATTRIBUTES: usize = 128;

/// The request version that clears the shadow and resets its version to 0.
pub const RESET_VERSION: i64 = -1;

/// The cloud API version that skips the version check (Aliyun's `UpdateDeviceShadow`: "if
/// versioning is not required, set this parameter to 0").
pub const UNVERSIONED: i64 = 0;

/// A device shadow in Aliyun's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowDocument {
    pub state: ShadowState,
    pub metadata: ShadowMetadata,
    /// Unix seconds of the last accepted write; 0 for a document never written.
    pub timestamp: i64,
    pub version: i64,
}

/// The attribute values: what the app wants (`desired`) and what the device last said (`reported`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowState {
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub desired: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub reported: Map<String, Value>,
}

/// When each attribute was last written; holds exactly the keys of [`ShadowState`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowMetadata {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub desired: BTreeMap<String, AttributeMetadata>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reported: BTreeMap<String, AttributeMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeMetadata {
    /// Unix seconds.
    pub timestamp: i64,
}

/// Why a shadow request is refused: a C SDK error code and a lowercase message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shadow error {code}: {message}")]
pub struct ShadowError {
    pub code: u32,
    pub message: String,
}

/// A device request read from `/shadow/update/{pk}/{dn}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRequest {
    /// Echoed in the reply; a numeric token is kept as its decimal string.
    pub client_token: Option<String>,
    pub method: ShadowMethod,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShadowMethod {
    Get,
    Update(StateWrite),
    Delete(StateWrite),
}

/// The state change an `update` or `delete` asks for, and the version it claims.
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    /// Greater than the stored version, or [`RESET_VERSION`].
    pub version: i64,
    pub desired: Option<SectionChange>,
    pub reported: Option<SectionChange>,
}

/// What a write does to one section.
#[derive(Debug, Clone, PartialEq)]
pub enum SectionChange {
    /// The section was given as `"null"`: remove every attribute.
    Clear,
    /// `update`: set each attribute; a JSON `null` value removes it.
    Merge(Map<String, Value>),
    /// `delete`: remove the named attributes.
    Remove(Vec<String>),
}

/// A request that could not be read, with the `clientToken` to answer it under when there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRequest {
    pub client_token: Option<String>,
    pub error: ShadowError,
}

/// What to do after a device request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceOutcome {
    /// The reply to publish on `/shadow/get/{pk}/{dn}`.
    pub reply: Vec<u8>,
    /// The document to store (compare-and-set against the one passed in); `None` leaves it as is.
    pub store: Option<ShadowDocument>,
    /// Why the request was refused, for logs and metrics; the reply already says so.
    pub error: Option<ShadowError>,
}

/// Whether a section's attributes are set (`update`) or removed (`delete`).
#[derive(Debug, Clone, Copy)]
enum WriteKind {
    Update,
    Delete,
}

/// Answers one device request against the stored document (`None`: no shadow yet).
pub fn handle_device_request(stored: Option<&ShadowDocument>, payload: &[u8], now_s: i64) -> DeviceOutcome {
    let request = match ShadowRequest::parse(payload) {
        Ok(request) => request,
        Err(rejected) => return DeviceOutcome::refused(rejected.error, None, rejected.client_token.as_deref(), now_s),
    };
    let token = request.client_token.as_deref();
    match &request.method {
        ShadowMethod::Get => match stored.filter(|doc| !doc.is_empty()) {
            Some(doc) => DeviceOutcome::replied(get_reply(doc, token, now_s), None),
            None => DeviceOutcome::refused(ShadowError::empty_document(), None, token, now_s),
        },
        ShadowMethod::Update(write) | ShadowMethod::Delete(write) => {
            let empty = ShadowDocument::default();
            let current = stored.unwrap_or(&empty);
            match current.write(write, now_s) {
                Ok(next) => DeviceOutcome::replied(success_reply(next.version, token, now_s), Some(next)),
                Err(error) => {
                    let version = (error.code == ShadowError::INVALID_VERSION).then_some(current.version);
                    DeviceOutcome::refused(error, version, token, now_s)
                }
            }
        }
    }
}

/// Applies an app's (cloud API) desired attributes: a value sets an attribute, `null` removes it.
/// `version` follows the device rule, except that [`UNVERSIONED`] skips the check and takes the
/// stored version plus one. On success returns the `control` push for `/shadow/get/{pk}/{dn}`; on
/// error the document is unchanged.
pub fn apply_desired(
    doc: &mut ShadowDocument,
    desired: Map<String, Value>,
    version: i64,
    now_s: i64,
) -> Result<Value, ShadowError> {
    if desired.is_empty() {
        return Err(ShadowError::empty_section("desired"));
    }
    let version = if version == UNVERSIONED { doc.version.saturating_add(1) } else { version };
    let write = StateWrite { version, desired: Some(SectionChange::Merge(desired)), reported: None };
    *doc = doc.write(&write, now_s)?;
    Ok(control_push(doc, now_s))
}

/// The reply to an accepted `update` or `delete`:
/// `{"method":"reply","payload":{"status":"success","version":n},"timestamp":s}`.
pub fn success_reply(version: i64, client_token: Option<&str>, now_s: i64) -> Value {
    reply(json!({ "status": "success", "version": version }), None, client_token, now_s)
}

/// The reply to `get`: `{"method":"reply","payload":{"status":"success","state":..,"metadata":..},
/// "version":n,"timestamp":s}`.
pub fn get_reply(doc: &ShadowDocument, client_token: Option<&str>, now_s: i64) -> Value {
    let payload = json!({ "status": "success", "state": doc.state, "metadata": doc.metadata });
    reply(payload, Some(doc.version), client_token, now_s)
}

/// The reply to a refused request: `{"method":"reply","payload":{"status":"error","content":
/// {"errorcode":"403","errormessage":".."}},"timestamp":s}`, with the shadow's `version` when given.
pub fn error_reply(error: &ShadowError, version: Option<i64>, client_token: Option<&str>, now_s: i64) -> Value {
    let content = json!({ "errorcode": error.code.to_string(), "errormessage": error.message });
    reply(json!({ "status": "error", "content": content }), version, client_token, now_s)
}

/// The push after the app changed `desired`: `{"method":"control","payload":{"state":..,"metadata":..},
/// "version":n,"timestamp":s}`. It carries the whole state, `reported` included, as Aliyun's example
/// does; the C SDK acts on `desired` when present.
pub fn control_push(doc: &ShadowDocument, now_s: i64) -> Value {
    json!({
        "method": "control",
        "payload": { "state": doc.state, "metadata": doc.metadata },
        "version": doc.version,
        "timestamp": now_s,
    })
}

/// A `reply` message, with the optional top-level `version` and `clientToken`.
fn reply(payload: Value, version: Option<i64>, client_token: Option<&str>, now_s: i64) -> Value {
    let mut message = Map::new();
    message.insert("method".into(), "reply".into());
    message.insert("payload".into(), payload);
    if let Some(version) = version {
        message.insert("version".into(), version.into());
    }
    if let Some(token) = client_token {
        message.insert("clientToken".into(), token.into());
    }
    message.insert("timestamp".into(), now_s.into());
    Value::Object(message)
}

// === impl ShadowDocument ===

impl ShadowDocument {
    /// Whether the shadow holds no attribute (what `get` answers with 407).
    pub fn is_empty(&self) -> bool {
        self.state.desired.is_empty() && self.state.reported.is_empty()
    }

    /// The document after `write`, or why it is refused; `self` is left as it was.
    pub fn write(&self, write: &StateWrite, now_s: i64) -> Result<Self, ShadowError> {
        let version = next_version(self.version, write.version)?;
        let mut next = if write.version == RESET_VERSION { Self::default() } else { self.clone() };
        if let Some(change) = &write.desired {
            change.apply(&mut next.state.desired, &mut next.metadata.desired, now_s);
        }
        if let Some(change) = &write.reported {
            change.apply(&mut next.state.reported, &mut next.metadata.reported, now_s);
        }
        check_attribute_count("desired", &next.state.desired)?;
        check_attribute_count("reported", &next.state.reported)?;
        next.version = version;
        next.timestamp = now_s;
        Ok(next)
    }
}

/// The version a write with `requested` leaves, or 403.
fn next_version(stored: i64, requested: i64) -> Result<i64, ShadowError> {
    match requested {
        RESET_VERSION => Ok(0),
        v if v < RESET_VERSION => Err(ShadowError::invalid_version(format!("version {v} is below -1"))),
        v if v <= stored => {
            Err(ShadowError::invalid_version(format!("version {v} is not greater than the shadow's version {stored}")))
        }
        v => Ok(v),
    }
}

fn check_attribute_count(section: &str, attributes: &Map<String, Value>) -> Result<(), ShadowError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ShadowError::new(
            ShadowError::TOO_MANY_ATTRIBUTES,
            format!("{section} would hold {} attributes, at most {MAX_ATTRIBUTES}", attributes.len()),
        ));
    }
    Ok(())
}

// === impl SectionChange ===

impl SectionChange {
    fn apply(&self, values: &mut Map<String, Value>, metadata: &mut BTreeMap<String, AttributeMetadata>, now_s: i64) {
        match self {
            Self::Clear => {
                values.clear();
                metadata.clear();
            }
            Self::Merge(changes) => {
                for (key, value) in changes {
                    if value.is_null() {
                        values.remove(key);
                        metadata.remove(key);
                    } else {
                        values.insert(key.clone(), value.clone());
                        metadata.insert(key.clone(), AttributeMetadata { timestamp: now_s });
                    }
                }
            }
            Self::Remove(keys) => {
                for key in keys {
                    values.remove(key);
                    metadata.remove(key);
                }
            }
        }
    }

    /// Reads one section of a request's `state`: `"null"`/`null` clears, else a non-empty object.
    fn parse(section: &str, value: Value, kind: WriteKind) -> Result<Self, ShadowError> {
        match value {
            Value::Null => Ok(Self::Clear),
            Value::String(text) if text == "null" => Ok(Self::Clear),
            Value::Object(attributes) if attributes.is_empty() => Err(ShadowError::empty_section(section)),
            Value::Object(attributes) => Ok(match kind {
                WriteKind::Update => Self::Merge(attributes),
                WriteKind::Delete => Self::Remove(attributes.into_iter().map(|(key, _)| key).collect()),
            }),
            _ => Err(ShadowError::new(
                ShadowError::EMPTY_REPORTED,
                format!("{section} must be an object of attributes or \"null\""),
            )),
        }
    }
}

// === impl ShadowRequest ===

impl ShadowRequest {
    /// Reads a device request payload.
    pub fn parse(payload: &[u8]) -> Result<Self, RejectedRequest> {
        let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(payload) else {
            let error = ShadowError::new(ShadowError::INVALID_JSON, "payload is not a json object");
            return Err(RejectedRequest { client_token: None, error });
        };
        let client_token = parse_client_token(message.get("clientToken"));
        match parse_method(&mut message) {
            Ok(method) => Ok(Self { client_token, method }),
            Err(error) => Err(RejectedRequest { client_token, error }),
        }
    }
}

fn parse_client_token(token: Option<&Value>) -> Option<String> {
    match token? {
        Value::String(token) => Some(token.clone()),
        Value::Number(token) => Some(token.to_string()),
        _ => None,
    }
}

fn parse_method(message: &mut Map<String, Value>) -> Result<ShadowMethod, ShadowError> {
    let method = match message.get("method") {
        None | Some(Value::Null) => return Err(ShadowError::new(ShadowError::NO_METHOD, "method is missing")),
        Some(Value::String(method)) => method.as_str(),
        Some(_) => return Err(ShadowError::new(ShadowError::INVALID_METHOD, "method must be a string")),
    };
    match method {
        "get" => Ok(ShadowMethod::Get),
        "update" => parse_write(message, WriteKind::Update).map(ShadowMethod::Update),
        "delete" => parse_write(message, WriteKind::Delete).map(ShadowMethod::Delete),
        other => Err(ShadowError::new(ShadowError::INVALID_METHOD, format!("unknown method {other:?}"))),
    }
}

fn parse_write(message: &mut Map<String, Value>, kind: WriteKind) -> Result<StateWrite, ShadowError> {
    let Some(Value::Object(mut state)) = message.remove("state") else {
        return Err(ShadowError::new(ShadowError::NO_STATE, "state must be an object"));
    };
    let version = parse_version(message.get("version"))?;
    let desired = state.remove("desired").map(|v| SectionChange::parse("desired", v, kind)).transpose()?;
    let reported = state.remove("reported").map(|v| SectionChange::parse("reported", v, kind)).transpose()?;
    if desired.is_none() && reported.is_none() {
        return Err(ShadowError::new(ShadowError::NO_REPORTED, "state has neither reported nor desired"));
    }
    Ok(StateWrite { version, desired, reported })
}

fn parse_version(version: Option<&Value>) -> Result<i64, ShadowError> {
    match version {
        None | Some(Value::Null) => Err(ShadowError::invalid_version("version is missing")),
        Some(version) => version.as_i64().ok_or_else(|| ShadowError::invalid_version("version must be an integer")),
    }
}

// === impl ShadowError ===

impl ShadowError {
    pub const INVALID_JSON: u32 = 400;
    pub const NO_METHOD: u32 = 401;
    pub const NO_STATE: u32 = 402;
    pub const INVALID_VERSION: u32 = 403;
    pub const NO_REPORTED: u32 = 404;
    pub const EMPTY_REPORTED: u32 = 405;
    pub const INVALID_METHOD: u32 = 406;
    pub const EMPTY_DOCUMENT: u32 = 407;
    pub const TOO_MANY_ATTRIBUTES: u32 = 408;
    pub const SERVER: u32 = 500;

    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A 500 for callers whose store or transport failed.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Self::SERVER, message)
    }

    fn invalid_version(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_VERSION, message)
    }

    fn empty_section(section: &str) -> Self {
        Self::new(Self::EMPTY_REPORTED, format!("{section} has no attributes"))
    }

    fn empty_document() -> Self {
        Self::new(Self::EMPTY_DOCUMENT, "shadow document is empty")
    }
}

// === impl DeviceOutcome ===

impl DeviceOutcome {
    fn replied(reply: Value, store: Option<ShadowDocument>) -> Self {
        Self { reply: reply.to_string().into_bytes(), store, error: None }
    }

    fn refused(error: ShadowError, version: Option<i64>, client_token: Option<&str>, now_s: i64) -> Self {
        let reply = error_reply(&error, version, client_token, now_s).to_string().into_bytes();
        Self { reply, store: None, error: Some(error) }
    }
}
