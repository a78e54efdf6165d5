use proptest::prelude::*;
use serde_json::json;

use super::*;

const T0: i64 = 1_469_564_492;
const T1: i64 = 1_469_564_576;

/// Sends `request` to the shadow `stored` and returns the outcome with its reply decoded.
fn send(stored: Option<&ShadowDocument>, request: Value, now_s: i64) -> (DeviceOutcome, Value) {
    let outcome = handle_device_request(stored, request.to_string().as_bytes(), now_s);
    let reply = serde_json::from_slice(&outcome.reply).expect("replies are json");
    (outcome, reply)
}

/// Sends `request` and returns the stored document, failing the test if it was refused.
fn accepted(stored: Option<&ShadowDocument>, request: Value, now_s: i64) -> ShadowDocument {
    let (outcome, reply) = send(stored, request, now_s);
    assert_eq!(outcome.error, None, "refused: {reply}");
    outcome.store.expect("an accepted write stores a document")
}

/// Sends `request`, checks that it is refused with `code` and changes nothing, and returns the reply.
fn refused(stored: Option<&ShadowDocument>, request: Value, code: u32) -> Value {
    let (outcome, reply) = send(stored, request, T1);
    assert_eq!(outcome.error.as_ref().map(|e| e.code), Some(code), "reply: {reply}");
    assert_eq!(outcome.store, None);
    assert_eq!(reply["payload"]["status"], "error");
    assert_eq!(reply["payload"]["content"]["errorcode"], code.to_string());
    reply
}

fn report(reported: Value, version: i64) -> Value {
    json!({ "method": "update", "state": { "reported": reported }, "version": version })
}

/// A lamp that reported `color` and `power` at T0, version 1, and was asked for green at T0.
fn lamp() -> ShadowDocument {
    let mut doc = accepted(None, report(json!({ "color": "red", "power": "on" }), 1), T0);
    apply_desired(&mut doc, desired(json!({ "color": "green" })), 2, T0).unwrap();
    doc
}

fn desired(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

// --- document ---

#[test]
fn new_document_is_empty_at_version_zero() {
    let doc = ShadowDocument::default();
    assert_eq!(doc.version, 0);
    assert!(doc.is_empty());
    assert_eq!(
        serde_json::to_value(&doc).unwrap(),
        json!({ "state": {}, "metadata": {}, "timestamp": 0, "version": 0 })
    );
}

#[test]
fn document_round_trips_aliyun_json() {
    let aliyun = json!({
        "state": {
            "desired": { "color": "RED", "sequence": ["RED", "GREEN", "BLUE"] },
            "reported": { "color": "GREEN" }
        },
        "metadata": {
            "desired": { "color": { "timestamp": T0 }, "sequence": { "timestamp": T0 } },
            "reported": { "color": { "timestamp": T0 } }
        },
        "timestamp": T0,
        "version": 1
    });
    let doc: ShadowDocument = serde_json::from_value(aliyun.clone()).unwrap();
    assert_eq!(doc.state.desired["sequence"], json!(["RED", "GREEN", "BLUE"]));
    assert_eq!(doc.metadata.reported["color"], AttributeMetadata { timestamp: T0 });
    assert_eq!(serde_json::to_value(&doc).unwrap(), aliyun);
}

#[test]
fn empty_sections_are_omitted() {
    let doc = accepted(None, report(json!({ "color": "red" }), 1), T0);
    assert_eq!(
        serde_json::to_value(&doc).unwrap(),
        json!({
            "state": { "reported": { "color": "red" } },
            "metadata": { "reported": { "color": { "timestamp": T0 } } },
            "timestamp": T0,
            "version": 1
        })
    );
}

// --- update ---

#[test]
fn first_update_creates_the_shadow_and_replies_with_its_version() {
    let request = json!({
        "method": "update", "state": { "reported": { "color": "red" } }, "version": 1, "clientToken": "dev-1"
    });
    let (outcome, reply) = send(None, request, T0);
    let doc = outcome.store.unwrap();
    assert_eq!(doc.version, 1);
    assert_eq!(doc.timestamp, T0);
    assert_eq!(doc.state.reported, desired(json!({ "color": "red" })));
    assert_eq!(
        reply,
        json!({
            "method": "reply",
            "payload": { "status": "success", "version": 1 },
            "clientToken": "dev-1",
            "timestamp": T0
        })
    );
}

#[test]
fn accepted_update_takes_the_request_version() {
    let doc = accepted(Some(&lamp()), report(json!({ "power": "off" }), 10), T1);
    assert_eq!(doc.version, 10);
}

#[test]
fn stale_or_equal_version_is_refused_with_403_and_no_change() {
    let doc = lamp();
    for version in [0, 1, 2] {
        let reply = refused(Some(&doc), report(json!({ "power": "off" }), version), ShadowError::INVALID_VERSION);
        // The device learns the shadow's version so it can catch up.
        assert_eq!(reply["version"], 2);
    }
}

#[test]
fn missing_non_integer_or_negative_version_is_refused_with_403() {
    let doc = lamp();
    let code = ShadowError::INVALID_VERSION;
    refused(Some(&doc), json!({ "method": "update", "state": { "reported": { "a": 1 } } }), code);
    refused(Some(&doc), report(json!({ "a": 1 }), 0).tap(|r| r["version"] = json!("3")), code);
    refused(Some(&doc), report(json!({ "a": 1 }), 0).tap(|r| r["version"] = json!(3.5)), code);
    refused(Some(&doc), report(json!({ "a": 1 }), -2), code);
    refused(None, report(json!({ "a": 1 }), 0), code);
}

#[test]
fn version_minus_one_clears_the_shadow_applies_the_request_and_resets_to_zero() {
    let doc = accepted(Some(&lamp()), report(json!({ "power": "off" }), -1), T1);
    assert_eq!(doc.version, 0);
    assert!(doc.state.desired.is_empty(), "desired cleared too");
    assert_eq!(doc.state.reported, desired(json!({ "power": "off" })));
    assert_eq!(doc.metadata.reported.len(), 1);
    assert!(doc.metadata.desired.is_empty());

    // Counting starts again from 0.
    refused(Some(&doc), report(json!({ "power": "on" }), 0), ShadowError::INVALID_VERSION);
    assert_eq!(accepted(Some(&doc), report(json!({ "power": "on" }), 1), T1).version, 1);
}

#[test]
fn values_replace_per_top_level_attribute() {
    let doc = accepted(None, report(json!({ "light": { "r": 1, "g": 2 }, "mode": 1 }), 1), T0);
    let doc = accepted(Some(&doc), report(json!({ "light": { "b": 3 } }), 2), T1);
    assert_eq!(doc.state.reported, desired(json!({ "light": { "b": 3 }, "mode": 1 })));
}

#[test]
fn arrays_are_replaced_whole() {
    let doc = accepted(None, report(json!({ "colors": ["RED", "GREEN", "BLUE"] }), 1), T0);
    let doc = accepted(Some(&doc), report(json!({ "colors": ["RED"] }), 2), T1);
    assert_eq!(doc.state.reported["colors"], json!(["RED"]));
}

#[test]
fn null_in_update_removes_the_attribute_and_its_metadata() {
    let doc = accepted(Some(&lamp()), report(json!({ "power": null, "level": 3 }), 3), T1);
    assert_eq!(doc.state.reported, desired(json!({ "color": "red", "level": 3 })));
    assert!(!doc.metadata.reported.contains_key("power"));
}

#[test]
fn string_null_in_update_is_a_value() {
    let doc = accepted(Some(&lamp()), report(json!({ "power": "null" }), 3), T1);
    assert_eq!(doc.state.reported["power"], "null");
}

#[test]
fn metadata_timestamps_follow_the_attributes_written() {
    let doc = accepted(Some(&lamp()), report(json!({ "power": "on" }), 3), T1);
    // Written, even with the same value: now.
    assert_eq!(doc.metadata.reported["power"].timestamp, T1);
    // Not written: kept.
    assert_eq!(doc.metadata.reported["color"].timestamp, T0);
    assert_eq!(doc.metadata.desired["color"].timestamp, T0);
    assert_eq!(doc.timestamp, T1);
}

#[test]
fn reporting_the_desired_value_keeps_desired() {
    let doc = accepted(Some(&lamp()), report(json!({ "color": "green" }), 3), T1);
    assert_eq!(doc.state.reported["color"], "green");
    assert_eq!(doc.state.desired["color"], "green");
}

#[test]
fn c_sdk_control_ack_clears_desired() {
    // What the C SDK sends after acting on a `control` push.
    let request = json!({
        "method": "update", "state": { "reported": { "color": "green" }, "desired": "null" },
        "clientToken": "a1lamp-5", "version": 3
    });
    let doc = accepted(Some(&lamp()), request, T1);
    assert!(doc.state.desired.is_empty());
    assert!(doc.metadata.desired.is_empty());
    assert_eq!(doc.state.reported["color"], "green");

    let only_desired = json!({ "method": "update", "state": { "desired": "null" }, "version": 3 });
    assert!(accepted(Some(&lamp()), only_desired, T1).state.desired.is_empty());
}

#[test]
fn too_many_attributes_are_refused_with_408() {
    let many = |n: usize, prefix: &str| Value::Object((0..n).map(|i| (format!("{prefix}{i}"), json!(i))).collect());
    refused(None, report(many(MAX_ATTRIBUTES + 1, "a"), 1), ShadowError::TOO_MANY_ATTRIBUTES);

    let full = accepted(None, report(many(MAX_ATTRIBUTES, "a"), 1), T0);
    refused(Some(&full), report(json!({ "one_more": 1 }), 2), ShadowError::TOO_MANY_ATTRIBUTES);
    // Replacing and removing within the limit is fine.
    let doc = accepted(Some(&full), report(json!({ "a0": null, "b": 1 }), 2), T1);
    assert_eq!(doc.state.reported.len(), MAX_ATTRIBUTES);
}

// --- delete ---

#[test]
fn delete_removes_the_named_reported_attributes() {
    // The C SDK writes the string "null"; Aliyun's docs show both.
    let request =
        json!({ "method": "delete", "state": { "reported": { "color": "null", "power": null } }, "version": 3 });
    let (outcome, reply) = send(Some(&lamp()), request, T1);
    let doc = outcome.store.unwrap();
    assert!(doc.state.reported.is_empty());
    assert!(doc.metadata.reported.is_empty());
    assert_eq!(doc.state.desired["color"], "green", "desired untouched");
    assert_eq!(doc.version, 3);
    assert_eq!(reply["payload"], json!({ "status": "success", "version": 3 }));
}

#[test]
fn delete_of_reported_null_removes_all_reported() {
    for all in [json!("null"), Value::Null] {
        let request = json!({ "method": "delete", "state": { "reported": all }, "version": 3 });
        let doc = accepted(Some(&lamp()), request, T1);
        assert!(doc.state.reported.is_empty());
        assert_eq!(doc.state.desired.len(), 1);
    }
}

#[test]
fn delete_removes_desired_attributes() {
    let request = json!({ "method": "delete", "state": { "desired": { "color": "null" } }, "version": 3 });
    let doc = accepted(Some(&lamp()), request, T1);
    assert!(doc.state.desired.is_empty());
    assert!(doc.metadata.desired.is_empty());
    assert_eq!(doc.state.reported.len(), 2);
}

#[test]
fn delete_follows_the_version_rule() {
    let stale = json!({ "method": "delete", "state": { "reported": "null" }, "version": 2 });
    refused(Some(&lamp()), stale, ShadowError::INVALID_VERSION);

    let reset = json!({ "method": "delete", "state": { "reported": { "color": null } }, "version": -1 });
    let doc = accepted(Some(&lamp()), reset, T1);
    assert!(doc.is_empty());
    assert_eq!(doc.version, 0);
}

// --- get ---

#[test]
fn get_returns_state_metadata_and_version() {
    let doc = lamp();
    // The C SDK sends a version with `get`; it is not checked.
    let (outcome, reply) = send(Some(&doc), json!({ "method": "get", "clientToken": "dev-7", "version": 1 }), T1);
    assert_eq!(outcome.store, None);
    assert_eq!(outcome.error, None);
    assert_eq!(
        reply,
        json!({
            "method": "reply",
            "payload": {
                "status": "success",
                "state": { "desired": { "color": "green" }, "reported": { "color": "red", "power": "on" } },
                "metadata": {
                    "desired": { "color": { "timestamp": T0 } },
                    "reported": { "color": { "timestamp": T0 }, "power": { "timestamp": T0 } }
                }
            },
            "version": 2,
            "clientToken": "dev-7",
            "timestamp": T1
        })
    );
}

#[test]
fn get_on_an_empty_shadow_is_407() {
    refused(None, json!({ "method": "get" }), ShadowError::EMPTY_DOCUMENT);
    let emptied = accepted(Some(&lamp()), report(json!("null"), 3).tap(|r| r["state"]["desired"] = json!("null")), T1);
    assert!(emptied.is_empty());
    refused(Some(&emptied), json!({ "method": "get" }), ShadowError::EMPTY_DOCUMENT);
}

// --- refusals ---

#[test]
fn malformed_requests_map_to_c_sdk_codes() {
    let doc = lamp();
    let cases = [
        (json!([1, 2]), ShadowError::INVALID_JSON),
        (json!("update"), ShadowError::INVALID_JSON),
        (json!({ "state": { "reported": { "a": 1 } }, "version": 3 }), ShadowError::NO_METHOD),
        (json!({ "method": null }), ShadowError::NO_METHOD),
        (json!({ "method": "update", "version": 3 }), ShadowError::NO_STATE),
        (json!({ "method": "update", "state": "on", "version": 3 }), ShadowError::NO_STATE),
        (json!({ "method": "delete", "version": 3 }), ShadowError::NO_STATE),
        (json!({ "method": "update", "state": {}, "version": 3 }), ShadowError::NO_REPORTED),
        (json!({ "method": "update", "state": { "other": 1 }, "version": 3 }), ShadowError::NO_REPORTED),
        (report(json!({}), 3), ShadowError::EMPTY_REPORTED),
        (report(json!(5), 3), ShadowError::EMPTY_REPORTED),
        (report(json!("on"), 3), ShadowError::EMPTY_REPORTED),
        (json!({ "method": "delete", "state": { "reported": {} }, "version": 3 }), ShadowError::EMPTY_REPORTED),
        (json!({ "method": "control" }), ShadowError::INVALID_METHOD),
        (json!({ "method": "UPDATE" }), ShadowError::INVALID_METHOD),
        (json!({ "method": 1 }), ShadowError::INVALID_METHOD),
    ];
    for (request, code) in cases {
        refused(Some(&doc), request, code);
    }
}

#[test]
fn bad_json_is_400() {
    for payload in [&b"{"[..], b"", b"\xff\xfe", b"not json"] {
        let outcome = handle_device_request(None, payload, T1);
        assert_eq!(outcome.error.map(|e| e.code), Some(ShadowError::INVALID_JSON));
        assert_eq!(outcome.store, None);
    }
}

#[test]
fn error_reply_has_aliyun_shape_and_echoes_the_token() {
    let reply = refused(None, json!({ "method": "reboot", "clientToken": 42 }), ShadowError::INVALID_METHOD);
    assert_eq!(
        reply,
        json!({
            "method": "reply",
            "payload": {
                "status": "error",
                "content": { "errorcode": "406", "errormessage": "unknown method \"reboot\"" }
            },
            "clientToken": "42",
            "timestamp": T1
        })
    );
}

#[test]
fn server_error_reply_for_callers() {
    let error = ShadowError::server("shadow store unavailable");
    assert_eq!(
        error_reply(&error, None, Some("t"), T1),
        json!({
            "method": "reply",
            "payload": { "status": "error", "content": { "errorcode": "500", "errormessage": "shadow store unavailable" } },
            "clientToken": "t",
            "timestamp": T1
        })
    );
}

// --- app side ---

#[test]
fn apply_desired_sets_desired_and_returns_the_control_push() {
    let mut doc = accepted(None, report(json!({ "color": "red" }), 1), T0);
    let control = apply_desired(&mut doc, desired(json!({ "color": "green" })), 2, T1).unwrap();
    assert_eq!(doc.version, 2);
    assert_eq!(doc.timestamp, T1);
    assert_eq!(doc.metadata.desired["color"].timestamp, T1);
    assert_eq!(
        control,
        json!({
            "method": "control",
            "payload": {
                "state": { "desired": { "color": "green" }, "reported": { "color": "red" } },
                "metadata": {
                    "desired": { "color": { "timestamp": T1 } },
                    "reported": { "color": { "timestamp": T0 } }
                }
            },
            "version": 2,
            "timestamp": T1
        })
    );
}

#[test]
fn apply_desired_with_a_stale_version_changes_nothing() {
    let mut doc = lamp();
    let before = doc.clone();
    let error = apply_desired(&mut doc, desired(json!({ "color": "blue" })), 2, T1).unwrap_err();
    assert_eq!(error.code, ShadowError::INVALID_VERSION);
    assert_eq!(doc, before);
}

#[test]
fn apply_desired_unversioned_takes_the_next_version() {
    let mut doc = lamp();
    apply_desired(&mut doc, desired(json!({ "color": "blue" })), UNVERSIONED, T1).unwrap();
    assert_eq!(doc.version, 3);
    assert_eq!(doc.state.desired["color"], "blue");

    let mut fresh = ShadowDocument::default();
    apply_desired(&mut fresh, desired(json!({ "color": "blue" })), UNVERSIONED, T1).unwrap();
    assert_eq!(fresh.version, 1);
}

#[test]
fn apply_desired_null_removes_and_minus_one_resets() {
    let mut doc = lamp();
    apply_desired(&mut doc, desired(json!({ "color": null })), 3, T1).unwrap();
    assert!(doc.state.desired.is_empty());
    assert!(doc.metadata.desired.is_empty());

    let mut doc = lamp();
    apply_desired(&mut doc, desired(json!({ "mode": 2 })), RESET_VERSION, T1).unwrap();
    assert_eq!(doc.version, 0);
    assert!(doc.state.reported.is_empty());
    assert_eq!(doc.state.desired, desired(json!({ "mode": 2 })));
}

#[test]
fn apply_desired_refuses_empty_and_too_many() {
    let mut doc = lamp();
    assert_eq!(apply_desired(&mut doc, Map::new(), 3, T1).unwrap_err().code, ShadowError::EMPTY_REPORTED);
    let many: Map<String, Value> = (0..=MAX_ATTRIBUTES).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_eq!(apply_desired(&mut doc, many, 3, T1).unwrap_err().code, ShadowError::TOO_MANY_ATTRIBUTES);
    assert_eq!(doc, lamp());
}

#[test]
fn device_sees_control_and_catches_up() {
    // App sets desired while the device holds version 1; the device adopts the pushed version.
    let mut doc = accepted(None, report(json!({ "color": "red" }), 1), T0);
    let control = apply_desired(&mut doc, desired(json!({ "color": "green" })), 5, T0).unwrap();
    let device_version = control["version"].as_i64().unwrap();
    let ack = json!({
        "method": "update", "state": { "reported": { "color": "green" }, "desired": "null" },
        "version": device_version + 1
    });
    let doc = accepted(Some(&doc), ack, T1);
    assert_eq!(doc.version, 6);
    assert!(doc.state.desired.is_empty());
}

// --- properties ---

/// Lets a test tweak a `json!` value inline.
trait Tap {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("null")),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]{1,2}|method|state|version|reported|desired", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A section of a request's `state`: mostly attributes, sometimes `"null"` or junk.
fn section() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map("[a-e]", leaf(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => Just(json!("null")),
        1 => leaf(),
    ]
}

/// Requests that are mostly well formed, so most of them reach the version and merge rules.
fn request() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        3 => Just(json!("update")),
        1 => Just(json!("delete")),
        1 => Just(json!("get")),
        1 => leaf(),
    ];
    let version = prop_oneof![4 => (-2i64..12).prop_map(|v| json!(v)), 1 => leaf()];
    (
        prop::option::weighted(0.95, method),
        prop::option::weighted(0.9, (prop::option::of(section()), prop::option::of(section()))),
        prop::option::weighted(0.95, version),
        prop::option::of("[a-z0-9-]{1,8}"),
    )
        .prop_map(|(method, state, version, token)| {
            let mut request = Map::new();
            if let Some(method) = method {
                request.insert("method".into(), method);
            }
            if let Some((reported, desired)) = state {
                let mut state = Map::new();
                if let Some(reported) = reported {
                    state.insert("reported".into(), reported);
                }
                if let Some(desired) = desired {
                    state.insert("desired".into(), desired);
                }
                request.insert("state".into(), Value::Object(state));
            }
            if let Some(version) = version {
                request.insert("version".into(), version);
            }
            if let Some(token) = token {
                request.insert("clientToken".into(), token.into());
            }
            Value::Object(request)
        })
}

/// Checks what every outcome must satisfy, whatever the request.
fn check_outcome(
    before: Option<&ShadowDocument>,
    request: &Value,
    outcome: &DeviceOutcome,
) -> Result<(), TestCaseError> {
    let reply: Value = serde_json::from_slice(&outcome.reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&reply["method"], "reply");
    prop_assert_eq!(outcome.error.is_some(), reply["payload"]["status"] == "error");
    prop_assert!(outcome.error.is_none() || outcome.store.is_none());
    if let Some(token) = request.get("clientToken") {
        prop_assert_eq!(&reply["clientToken"], token);
    }
    if let Some(after) = &outcome.store {
        let before_version = before.map_or(0, |doc| doc.version);
        if request["version"] == json!(RESET_VERSION) {
            prop_assert_eq!(after.version, 0);
        } else {
            prop_assert!(after.version > before_version, "{} -> {}", before_version, after.version);
        }
        for (state, metadata) in
            [(&after.state.desired, &after.metadata.desired), (&after.state.reported, &after.metadata.reported)]
        {
            prop_assert!(state.len() <= MAX_ATTRIBUTES);
            prop_assert!(state.keys().eq(metadata.keys()), "metadata follows state");
            prop_assert!(state.values().all(|v| !v.is_null()));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let doc = lamp();
        let outcome = handle_device_request(None, &bytes, T1);
        prop_assert!(serde_json::from_slice::<Value>(&outcome.reply).is_ok());
        let _ = handle_device_request(Some(&doc), &bytes, T1);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        let doc = lamp();
        for stored in [None, Some(&doc)] {
            let outcome = handle_device_request(stored, value.to_string().as_bytes(), T1);
            check_outcome(stored, &value, &outcome)?;
        }
        if let Value::Object(map) = value {
            let mut doc = lamp();
            let _ = apply_desired(&mut doc, map, 3, T1);
        }
    }

    #[test]
    fn version_never_decreases_except_by_reset(requests in prop::collection::vec(request(), 1..24)) {
        let mut stored: Option<ShadowDocument> = None;
        for (i, request) in requests.iter().enumerate() {
            let outcome = handle_device_request(stored.as_ref(), request.to_string().as_bytes(), T0 + i as i64);
            check_outcome(stored.as_ref(), request, &outcome)?;
            if let Some(next) = outcome.store {
                stored = Some(next);
            }
        }
    }

    #[test]
    fn desired_version_never_decreases_except_by_reset(
        writes in prop::collection::vec((prop::collection::btree_map("[a-e]", leaf(), 0..4), -2i64..12), 1..16)
    ) {
        let mut doc = ShadowDocument::default();
        for (desired, version) in writes {
            let before = doc.clone();
            match apply_desired(&mut doc, desired.into_iter().collect(), version, T1) {
                Ok(control) => {
                    prop_assert_eq!(&control["version"], &json!(doc.version));
                    prop_assert!(version == RESET_VERSION || doc.version > before.version);
                }
                Err(_) => prop_assert_eq!(&doc, &before),
            }
        }
    }
}
