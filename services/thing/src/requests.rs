//! Device requests the thing service answers: tags (`thing/deviceinfo/update|delete`), desired
//! properties (`thing/property/desired/get|delete`), the thing model (`thing/dsltemplate/get`,
//! `thing/dynamicTsl/get`) and the shadow (`/shadow/update`). Every Alink request gets a reply
//! with `id`, `code`, `data` and `message`; a refusal names the offending field.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_bus::events::{self, Origin};
use tether_contract::{DesiredValue, DeviceMessage, DeviceRequest, ServiceError, Tag, now_ms};
use tether_model::topic::ShadowOp;
use tether_model::{AlinkCode, AlinkReply, AlinkRequest, Topic};
use tether_store::records::Change;

use crate::Thing;
use crate::records;

/// Most tags one device may carry.
pub const MAX_TAGS: usize = 100;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE: usize = 128;

/// An Alink refusal: the code and a message naming the field.
#[derive(Debug)]
struct Refusal {
    code: AlinkCode,
    message: String,
}

type Answer = Result<Value, Refusal>;

// === impl Thing ===

impl Thing {
    pub(crate) async fn answer(&self, request: DeviceRequest) -> Result<Option<DeviceMessage>, ServiceError> {
        let topic = Topic::parse(&request.topic).map_err(|e| ServiceError::invalid("topic", e))?;
        if topic.device() != Some(&request.from.device) {
            return Err(ServiceError::PermissionDenied(format!(
                "{} may not use {}",
                request.from.device, request.topic
            )));
        }
        if let Topic::Shadow { op: ShadowOp::Update, device } = &topic {
            return self.shadow_request(device, &request.payload).await.map(Some);
        }
        let Topic::Sys { path, .. } = &topic else {
            return Err(ServiceError::invalid("topic", "not a thing service topic"));
        };
        let alink = match AlinkRequest::decode(&request.payload) {
            Ok(alink) => alink,
            Err(error) => {
                let reply = AlinkReply::new(error.id.unwrap_or_default(), error.code, json!({}))
                    .with_method(topic.alink_method())
                    .with_message(error.message);
                return Ok(Some(message(topic.reply_topic(), reply)));
            }
        };
        let answer = match path.as_str() {
            "thing/deviceinfo/update" => self.update_tags(&request, &alink.params).await?,
            "thing/deviceinfo/delete" => self.delete_tags(&request, &alink.params).await?,
            "thing/property/desired/get" => self.get_desired(&request, &alink.params).await?,
            "thing/property/desired/delete" => self.delete_desired(&request, &alink.params).await?,
            "thing/dsltemplate/get" | "thing/dynamicTsl/get" => self.thing_model_of(&request).await?,
            _ => return Err(ServiceError::invalid("topic", "not a thing service topic")),
        };
        let reply = match answer {
            Ok(data) => AlinkReply::success(&alink.id, data),
            Err(refusal) => AlinkReply::new(&alink.id, refusal.code, json!({})).with_message(refusal.message),
        };
        Ok(Some(message(topic.reply_topic(), reply.with_method(topic.alink_method()))))
    }

    /// `thing.deviceinfo.update`: params `[{attrKey, attrValue}]`, merged into the stored tags.
    async fn update_tags(&self, request: &DeviceRequest, params: &Value) -> Result<Answer, ServiceError> {
        let tags = match parse_tags(params, true) {
            Ok(tags) => tags,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let key = records::device_key("tags", &request.from.device);
        let stored = self
            .records
            .update(&key, |stored: Option<Vec<Tag>>| {
                let mut all = stored.unwrap_or_default();
                for tag in &tags {
                    match all.iter_mut().find(|t| t.attr_key == tag.attr_key) {
                        Some(existing) => existing.attr_value.clone_from(&tag.attr_value),
                        None => all.push(tag.clone()),
                    }
                }
                if all.len() > MAX_TAGS {
                    let refusal = Refusal {
                        code: AlinkCode::ParamError,
                        message: format!("params: a device has at most {MAX_TAGS} tags"),
                    };
                    return Ok((Change::Keep, Err(refusal)));
                }
                all.sort_by(|a, b| a.attr_key.cmp(&b.attr_key));
                Ok::<_, ServiceError>((Change::Put(all), Ok(())))
            })
            .await?;
        if let Err(refusal) = stored {
            return Ok(Err(refusal));
        }
        let items = serde_json::to_value(&tags).unwrap_or_default();
        self.publish_event(events::tags(origin(request), "UPDATE", items, now_ms())).await;
        Ok(Ok(json!({})))
    }

    /// `thing.deviceinfo.delete`: params `[{attrKey}]`.
    async fn delete_tags(&self, request: &DeviceRequest, params: &Value) -> Result<Answer, ServiceError> {
        let tags = match parse_tags(params, false) {
            Ok(tags) => tags,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let key = records::device_key("tags", &request.from.device);
        self.records
            .update(&key, |stored: Option<Vec<Tag>>| {
                let mut all = stored.unwrap_or_default();
                all.retain(|t| !tags.iter().any(|gone| gone.attr_key == t.attr_key));
                let change = if all.is_empty() { Change::Delete } else { Change::Put(all) };
                Ok::<_, ServiceError>((change, ()))
            })
            .await?;
        let items: Vec<Value> = tags.iter().map(|t| json!({ "attrKey": t.attr_key })).collect();
        self.publish_event(events::tags(origin(request), "DELETE", Value::Array(items), now_ms())).await;
        Ok(Ok(json!({})))
    }

    /// `thing.property.desired.get`: params `["id", ...]` (an empty list asks for all) →
    /// `{id: {value, version}}`.
    async fn get_desired(&self, request: &DeviceRequest, params: &Value) -> Result<Answer, ServiceError> {
        let wanted = match params {
            Value::Array(ids) => ids.iter().map(|id| id.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>(),
            Value::Null => Some(Vec::new()),
            _ => None,
        };
        let Some(wanted) = wanted else {
            return Ok(Err(param_error("params: must be a list of property identifiers")));
        };
        let desired = self.desired(&request.from.device).await?;
        let data: Map<String, Value> = desired
            .into_iter()
            .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
            .map(|(id, d)| (id, json!({ "value": d.value, "version": d.version })))
            .collect();
        Ok(Ok(Value::Object(data)))
    }

    /// `thing.property.desired.delete`: params `{id: {version?}}`; a value is removed when no
    /// version is given or the version matches.
    async fn delete_desired(&self, request: &DeviceRequest, params: &Value) -> Result<Answer, ServiceError> {
        let Value::Object(items) = params else {
            return Ok(Err(param_error("params: must be an object of property identifiers")));
        };
        let mut targets = Vec::with_capacity(items.len());
        for (id, spec) in items {
            let version = match spec.get("version") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_i64() {
                    Some(v) => Some(v),
                    None => return Ok(Err(param_error(format!("{id}.version: must be an integer")))),
                },
            };
            targets.push((id.clone(), version));
        }
        let key = records::device_key("desired", &request.from.device);
        self.records
            .update(&key, |stored: Option<std::collections::BTreeMap<String, DesiredValue>>| {
                let mut all = stored.unwrap_or_default();
                for (id, version) in &targets {
                    if all.get(id).is_some_and(|d| version.is_none_or(|v| v == d.version)) {
                        all.remove(id);
                    }
                }
                Ok::<_, ServiceError>((Change::Put(all), ()))
            })
            .await?;
        Ok(Ok(json!({})))
    }

    /// `thing.dsltemplate.get`: the product's thing model (empty lists when it has none).
    async fn thing_model_of(&self, request: &DeviceRequest) -> Result<Answer, ServiceError> {
        let product_key = &request.from.device.product_key;
        let model = match self.thing_model(product_key).await? {
            Some(tsl) => tsl.to_json(),
            None => json!({ "properties": [], "events": [], "services": [] }),
        };
        let mut model = model;
        if let Value::Object(fields) = &mut model {
            fields.insert("profile".into(), json!({ "productKey": product_key }));
        }
        Ok(Ok(model))
    }
}

/// Tags from `[{attrKey, attrValue}]`; `with_values` is false for deletes (`[{attrKey}]`).
fn parse_tags(params: &Value, with_values: bool) -> Result<Vec<Tag>, Refusal> {
    let Value::Array(items) = params else {
        return Err(param_error("params: must be a list of {attrKey, attrValue}"));
    };
    let mut tags = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = item.get("attrKey").and_then(Value::as_str).unwrap_or_default();
        if !valid_tag_key(key) {
            return Err(param_error(format!(
                "params[{i}].attrKey: 2 to 32 letters, digits or underscores, starting with a letter"
            )));
        }
        let value = if with_values {
            match item.get("attrValue") {
                Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_TAG_VALUE => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(param_error(format!(
                        "params[{i}].attrValue: a string of 1 to {MAX_TAG_VALUE} characters"
                    )));
                }
            }
        } else {
            String::new()
        };
        tags.push(Tag { attr_key: key.to_owned(), attr_value: value });
    }
    Ok(tags)
}

fn valid_tag_key(key: &str) -> bool {
    (2..=32).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn param_error(message: impl Into<String>) -> Refusal {
    Refusal { code: AlinkCode::ParamError, message: message.into() }
}

fn origin(request: &DeviceRequest) -> Origin<'_> {
    Origin { tenant: &request.from.tenant, device: &request.from.device, iot_id: &request.from.iot_id }
}

pub(crate) fn message(topic: String, reply: AlinkReply) -> DeviceMessage {
    DeviceMessage { topic, payload: Bytes::from(reply.encode()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_follow_aliyun_rules() {
        assert!(valid_tag_key("Room_1"));
        assert!(!valid_tag_key("1room"));
        assert!(!valid_tag_key("r"));
        assert!(!valid_tag_key("room-1"));
    }

    #[test]
    fn tags_are_refused_with_the_field_named() {
        let refusal = parse_tags(&json!([{"attrKey": "ok_key", "attrValue": ""}]), true).unwrap_err();
        assert!(refusal.message.starts_with("params[0].attrValue"), "{}", refusal.message);
        let tags = parse_tags(&json!([{"attrKey": "floor", "attrValue": 3}]), true).unwrap();
        assert_eq!(tags[0].attr_value, "3");
    }
}
