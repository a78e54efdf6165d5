//! The Aliyun Alink topic grammar (PROTOCOL.md B.3): publish topics parsed into typed families and
//! built back for downlinks, product topic classes, and the per-device ACL for PUBLISH and
//! SUBSCRIBE.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceKey, IdError, MessageId, ProductKey};

/// Longest topic Tether accepts, in bytes.
pub const MAX_TOPIC_LEN: usize = 512;

/// A concrete (wildcard-free) Alink topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `/sys/{pk}/{dn}/{path}`: the thing model, RRPC and per-device broadcast.
    Sys { device: DeviceKey, path: String },
    /// `/{pk}/{dn}/user/{short}`: custom topics, governed by the product's topic classes.
    Custom { device: DeviceKey, short: String },
    /// `/ext/ntp/{pk}/{dn}/request|response`.
    Ntp { device: DeviceKey, direction: NtpDirection },
    /// `/ext/session/{pk}/{dn}/{path}`: gateway sub-device sessions (`combine/login`, ...).
    Session { device: DeviceKey, path: String },
    /// `/ext/rrpc/{messageId}/{pk}/{dn}/user/{short}`: RRPC over a custom topic.
    ExtRrpc { message_id: MessageId, device: DeviceKey, short: String },
    /// `/ext/error/{pk}/{dn}`.
    ExtError { device: DeviceKey },
    /// `/shadow/update/{pk}/{dn}` (device → cloud) and `/shadow/get/{pk}/{dn}` (cloud → device).
    Shadow { device: DeviceKey, op: ShadowOp },
    /// `/broadcast/{pk}/{suffix}`: to every device of the product subscribed to it.
    Broadcast { product_key: ProductKey, suffix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NtpDirection {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowOp {
    Update,
    Get,
}

/// What a `/sys` topic path means to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysKind<'a> {
    /// `thing/event/property/post`.
    PropertyPost,
    /// `thing/event/{identifier}/post`.
    EventPost(&'a str),
    /// `rrpc/request/{messageId}` (cloud → device).
    RrpcRequest(&'a str),
    /// `rrpc/response/{messageId}` (device → cloud).
    RrpcResponse(&'a str),
    /// `broadcast/request/{messageId}` (cloud → device).
    BroadcastRequest(&'a str),
    /// Any `..._reply`: a device's answer to a downlink, or the platform's answer to an uplink.
    Reply(&'a str),
    /// Any other system path (a request the edge may not know yet).
    Request(&'a str),
}

/// Why a topic is not part of the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("topic is not an Alink topic")]
    Unknown,
    #[error("topic has an empty level")]
    EmptyLevel,
    #[error("topic may not contain wildcards")]
    Wildcard,
    #[error(transparent)]
    Id(#[from] IdError),
}

/// Which way a custom topic class may be used by devices (Aliyun's PUB, SUB and ALL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicOperation {
    Pub,
    Sub,
    All,
}

/// A product's custom topic class `/{pk}/${deviceName}/user/{short}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicClass {
    /// The part after `user/`, e.g. `update/error`.
    pub short: String,
    pub operation: TopicOperation,
}

/// A SUBSCRIBE filter, split into levels (may contain `+` and `#`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    levels: Vec<String>,
}

// === impl Topic ===

impl Topic {
    /// Parses a PUBLISH topic name.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if topic.contains(['+', '#']) {
            return Err(TopicError::Wildcard);
        }
        let rest = topic.strip_prefix('/').ok_or(TopicError::Unknown)?;
        let levels: Vec<&str> = rest.split('/').collect();
        if levels.iter().any(|l| l.is_empty()) {
            return Err(TopicError::EmptyLevel);
        }
        let device = |pk: &str, dn: &str| DeviceKey::parse(pk, dn);
        let tail = |from: usize| levels[from..].join("/");
        match levels.as_slice() {
            ["sys", pk, dn, _, ..] => Ok(Self::Sys { device: device(pk, dn)?, path: tail(3) }),
            ["ext", "ntp", pk, dn, dir] => {
                let direction = match *dir {
                    "request" => NtpDirection::Request,
                    "response" => NtpDirection::Response,
                    _ => return Err(TopicError::Unknown),
                };
                Ok(Self::Ntp { device: device(pk, dn)?, direction })
            }
            ["ext", "session", pk, dn, _, ..] => Ok(Self::Session { device: device(pk, dn)?, path: tail(4) }),
            ["ext", "rrpc", id, pk, dn, "user", _, ..] => {
                Ok(Self::ExtRrpc { message_id: MessageId::new(*id)?, device: device(pk, dn)?, short: tail(6) })
            }
            ["ext", "error", pk, dn] => Ok(Self::ExtError { device: device(pk, dn)? }),
            ["shadow", op, pk, dn] => {
                let op = match *op {
                    "update" => ShadowOp::Update,
                    "get" => ShadowOp::Get,
                    _ => return Err(TopicError::Unknown),
                };
                Ok(Self::Shadow { device: device(pk, dn)?, op })
            }
            ["broadcast", pk, _, ..] => Ok(Self::Broadcast { product_key: ProductKey::new(*pk)?, suffix: tail(2) }),
            [pk, dn, "user", _, ..] => Ok(Self::Custom { device: device(pk, dn)?, short: tail(3) }),
            _ => Err(TopicError::Unknown),
        }
    }

    /// A `/sys/{pk}/{dn}/{path}` topic.
    pub fn sys(device: &DeviceKey, path: impl Into<String>) -> Self {
        Self::Sys { device: device.clone(), path: path.into() }
    }

    /// The device the topic belongs to; `None` for product-wide broadcast topics.
    pub fn device(&self) -> Option<&DeviceKey> {
        match self {
            Self::Sys { device, .. }
            | Self::Custom { device, .. }
            | Self::Ntp { device, .. }
            | Self::Session { device, .. }
            | Self::ExtRrpc { device, .. }
            | Self::ExtError { device }
            | Self::Shadow { device, .. } => Some(device),
            Self::Broadcast { .. } => None,
        }
    }

    /// Classifies a `/sys` path; `None` for other families.
    pub fn sys_kind(&self) -> Option<SysKind<'_>> {
        let Self::Sys { path, .. } = self else {
            return None;
        };
        let levels: Vec<&str> = path.split('/').collect();
        let kind = match levels.as_slice() {
            _ if path.ends_with("_reply") => SysKind::Reply(path),
            ["thing", "event", "property", "post"] => SysKind::PropertyPost,
            ["thing", "event", id, "post"] => SysKind::EventPost(id),
            ["rrpc", "request", id] => SysKind::RrpcRequest(id),
            ["rrpc", "response", id] => SysKind::RrpcResponse(id),
            ["broadcast", "request", id] => SysKind::BroadcastRequest(id),
            _ => SysKind::Request(path),
        };
        Some(kind)
    }

    /// The topic the platform answers an uplink request on: the request topic + `_reply`.
    pub fn reply_topic(&self) -> String {
        format!("{self}_reply")
    }

    /// The Alink `method` a `/sys` request path implies (`thing/event/property/post` →
    /// `thing.event.property.post`).
    pub fn alink_method(&self) -> Option<String> {
        match self {
            Self::Sys { path, .. } => Some(path.replace('/', ".")),
            _ => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sys { device, path } => {
                write!(f, "/sys/{}/{}/{path}", device.product_key, device.device_name)
            }
            Self::Custom { device, short } => {
                write!(f, "/{}/{}/user/{short}", device.product_key, device.device_name)
            }
            Self::Ntp { device, direction } => {
                let dir = match direction {
                    NtpDirection::Request => "request",
                    NtpDirection::Response => "response",
                };
                write!(f, "/ext/ntp/{}/{}/{dir}", device.product_key, device.device_name)
            }
            Self::Session { device, path } => {
                write!(f, "/ext/session/{}/{}/{path}", device.product_key, device.device_name)
            }
            Self::ExtRrpc { message_id, device, short } => {
                write!(f, "/ext/rrpc/{message_id}/{}/{}/user/{short}", device.product_key, device.device_name)
            }
            Self::ExtError { device } => {
                write!(f, "/ext/error/{}/{}", device.product_key, device.device_name)
            }
            Self::Shadow { device, op } => {
                let op = match op {
                    ShadowOp::Update => "update",
                    ShadowOp::Get => "get",
                };
                write!(f, "/shadow/{op}/{}/{}", device.product_key, device.device_name)
            }
            Self::Broadcast { product_key, suffix } => write!(f, "/broadcast/{product_key}/{suffix}"),
        }
    }
}

// === impl TopicClass ===

impl TopicClass {
    /// The three classes every new Aliyun product starts with.
    pub fn defaults() -> Vec<TopicClass> {
        vec![
            TopicClass { short: "update".into(), operation: TopicOperation::Pub },
            TopicClass { short: "update/error".into(), operation: TopicOperation::Pub },
            TopicClass { short: "get".into(), operation: TopicOperation::Sub },
        ]
    }

    /// Validates a short name: levels of letters, digits and `_-`, no wildcards.
    pub fn validate_short(short: &str) -> Result<(), TopicError> {
        if short.is_empty() || short.len() > 128 {
            return Err(TopicError::EmptyLevel);
        }
        for level in short.split('/') {
            if level.is_empty() {
                return Err(TopicError::EmptyLevel);
            }
            if !level.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(TopicError::Unknown);
            }
        }
        Ok(())
    }

    /// The class's full topic template, as Aliyun shows it.
    pub fn full_name(&self, product_key: &ProductKey) -> String {
        format!("/{product_key}/${{deviceName}}/user/{}", self.short)
    }

    pub fn device_may_publish(&self) -> bool {
        matches!(self.operation, TopicOperation::Pub | TopicOperation::All)
    }

    pub fn device_may_subscribe(&self) -> bool {
        matches!(self.operation, TopicOperation::Sub | TopicOperation::All)
    }
}

/// Whether `device` may PUBLISH to `topic`, given its product's topic classes.
pub fn may_publish(device: &DeviceKey, classes: &[TopicClass], topic: &Topic) -> bool {
    if topic.device() != Some(device) {
        return false;
    }
    match topic {
        Topic::Sys { .. } | Topic::Session { .. } | Topic::ExtRrpc { .. } => true,
        Topic::Ntp { direction, .. } => *direction == NtpDirection::Request,
        Topic::Shadow { op, .. } => *op == ShadowOp::Update,
        Topic::Custom { short, .. } => classes.iter().any(|c| c.device_may_publish() && &c.short == short),
        Topic::ExtError { .. } | Topic::Broadcast { .. } => false,
    }
}

// === impl SubscribeFilter ===

impl SubscribeFilter {
    /// Parses a SUBSCRIBE filter; `#` only as the last level, wildcards only as whole levels.
    pub fn parse(filter: &str) -> Result<Self, TopicError> {
        if filter.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if filter.is_empty() {
            return Err(TopicError::EmptyLevel);
        }
        let levels: Vec<String> = filter.split('/').map(str::to_owned).collect();
        for (i, level) in levels.iter().enumerate() {
            let wild = level.contains(['+', '#']);
            if wild && level.len() != 1 {
                return Err(TopicError::Wildcard);
            }
            if level == "#" && i + 1 != levels.len() {
                return Err(TopicError::Wildcard);
            }
        }
        Ok(Self { levels })
    }

    /// Whether a concrete topic matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level.as_str() {
                "#" => return true,
                "+" => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_levels.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }

    /// Whether every topic this filter matches is also matched by `other`.
    pub fn is_covered_by(&self, other: &SubscribeFilter) -> bool {
        let mut mine = self.levels.iter();
        for theirs in &other.levels {
            if theirs == "#" {
                return true;
            }
            match mine.next().map(String::as_str) {
                None | Some("#") => return false,
                Some("+") if theirs != "+" => return false,
                Some(level) if theirs != "+" && theirs != level => return false,
                Some(_) => {}
            }
        }
        mine.next().is_none()
    }

    /// Whether some topic is matched by both filters.
    pub fn overlaps(&self, other: &SubscribeFilter) -> bool {
        let mut theirs = other.levels.iter();
        for mine in &self.levels {
            let Some(theirs) = theirs.next() else {
                return mine == "#";
            };
            if mine == "#" || theirs == "#" {
                return true;
            }
            if mine != "+" && theirs != "+" && mine != theirs {
                return false;
            }
        }
        match theirs.next() {
            None => true,
            Some(level) => level == "#",
        }
    }

    fn has_wildcard(&self) -> bool {
        self.levels.iter().any(|l| l == "+" || l == "#")
    }
}

impl fmt::Display for SubscribeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.levels.join("/"))
    }
}

/// The filters a device is subscribed to without asking (PROTOCOL.md E): its own downlinks and
/// replies. Explicit SUBSCRIBEs covered by these add nothing.
pub fn implicit_filters(device: &DeviceKey) -> Vec<String> {
    let (pk, dn) = (&device.product_key, &device.device_name);
    vec![
        format!("/sys/{pk}/{dn}/#"),
        format!("/ext/ntp/{pk}/{dn}/response"),
        format!("/ext/session/{pk}/{dn}/#"),
        format!("/ext/error/{pk}/{dn}"),
        format!("/shadow/get/{pk}/{dn}"),
    ]
}

/// Whether `device` may SUBSCRIBE to `filter`: its own system topics, its product's SUB/ALL
/// custom topic classes, custom RRPC topics, and its product's broadcast topics.
pub fn may_subscribe(device: &DeviceKey, classes: &[TopicClass], filter: &SubscribeFilter) -> bool {
    let (pk, dn) = (&device.product_key, &device.device_name);
    let mut allowed = implicit_filters(device);
    allowed.push(format!("/ext/rrpc/+/{pk}/{dn}/user/#"));
    allowed.push(format!("/broadcast/{pk}/#"));
    let own = allowed.iter().filter_map(|a| SubscribeFilter::parse(a).ok());
    if own.into_iter().any(|a| filter.is_covered_by(&a)) {
        return true;
    }
    let own_custom = SubscribeFilter::parse(&format!("/{pk}/{dn}/user/#"));
    if !own_custom.is_ok_and(|own| filter.is_covered_by(&own)) {
        return false;
    }
    classes.iter().filter(|c| c.device_may_subscribe()).any(|class| {
        let Ok(class_filter) = SubscribeFilter::parse(&format!("/{pk}/{dn}/user/{}", class.short)) else {
            return false;
        };
        // Wildcard filters over the device's custom topics are granted when they reach at least
        // one SUB class: the platform only ever delivers to SUB/ALL topics anyway.
        filter.is_covered_by(&class_filter) || (filter.has_wildcard() && filter.overlaps(&class_filter))
    })
}

#[cfg(test)]
mod tests;
