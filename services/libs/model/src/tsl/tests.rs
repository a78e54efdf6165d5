use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A lamp as Aliyun's console exports it, including the generated `post` event and `set`/`get` services.
fn lamp_json() -> Value {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": { "version": "1.0", "productKey": "a1lamp" },
        "properties": [
            { "identifier": "LightSwitch", "name": "switch", "accessMode": "rw", "required": true,
              "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } },
            { "identifier": "Brightness", "name": "brightness", "accessMode": "rw", "required": false,
              "dataType": { "type": "int", "specs": { "min": "0", "max": "100", "step": "1", "unit": "%", "unitName": "percent" } } },
            { "identifier": "Colour", "name": "colour", "accessMode": "rw",
              "dataType": { "type": "struct", "specs": [
                  { "identifier": "red", "name": "red", "dataType": { "type": "int", "specs": { "min": "0", "max": "255", "step": "1" } } },
                  { "identifier": "green", "name": "green", "dataType": { "type": "int", "specs": { "min": "0", "max": "255", "step": "1" } } },
                  { "identifier": "blue", "name": "blue", "dataType": { "type": "int", "specs": { "min": "0", "max": "255", "step": "1" } } }
              ] } },
            { "identifier": "Schedule", "name": "schedule", "accessMode": "rw",
              "dataType": { "type": "array", "specs": { "size": "4", "item": { "type": "struct", "specs": [
                  { "identifier": "hour", "name": "hour", "dataType": { "type": "int", "specs": { "min": "0", "max": "23", "step": "1" } } },
                  { "identifier": "on", "name": "on", "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } }
              ] } } } },
            { "identifier": "Mode", "name": "mode", "accessMode": "rw",
              "dataType": { "type": "enum", "specs": { "0": "white", "1": "colour", "2": "scene" } } },
            { "identifier": "DeviceName", "name": "name", "accessMode": "r",
              "dataType": { "type": "text", "specs": { "length": "16" } } },
            { "identifier": "Voltage", "name": "voltage", "accessMode": "r", "desc": "supply voltage",
              "dataType": { "type": "float", "specs": { "min": "0", "max": "4.5", "step": "0.1", "unit": "V" } } },
            { "identifier": "LastOn", "name": "last on", "accessMode": "r", "dataType": { "type": "date", "specs": {} } }
        ],
        "events": [
            { "identifier": "post", "name": "post", "type": "info", "required": true, "method": "thing.event.property.post",
              "outputData": [ { "identifier": "LightSwitch", "name": "switch", "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } } ] },
            { "identifier": "Overheat", "name": "overheat", "type": "alert", "required": false, "method": "thing.event.Overheat.post",
              "outputData": [
                  { "identifier": "temperature", "name": "temperature", "dataType": { "type": "double", "specs": { "min": "-40", "max": "150", "unit": "°C" } } },
                  { "identifier": "level", "name": "level", "dataType": { "type": "enum", "specs": { "1": "warm", "2": "hot" } } }
              ] }
        ],
        "services": [
            { "identifier": "set", "name": "set", "callType": "async", "required": true, "method": "thing.service.property.set",
              "inputData": [ { "identifier": "LightSwitch", "name": "switch", "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } } ],
              "outputData": [] },
            { "identifier": "get", "name": "get", "callType": "async", "required": true, "method": "thing.service.property.get",
              "inputData": ["LightSwitch", "Brightness"], "outputData": [] },
            { "identifier": "Blink", "name": "blink", "callType": "sync", "method": "thing.service.Blink",
              "inputData": [ { "identifier": "times", "name": "times", "dataType": { "type": "int", "specs": { "min": "1", "max": "10", "step": "1" } } } ],
              "outputData": [ { "identifier": "done", "name": "done", "dataType": { "type": "bool", "specs": { "0": "no", "1": "yes" } } } ] },
            { "identifier": "Fade", "name": "fade", "callType": "async",
              "inputData": [ { "identifier": "seconds", "name": "seconds", "dataType": { "type": "float", "specs": { "min": "0.5", "max": "60" } } } ],
              "outputData": [] }
        ]
    })
}

fn lamp() -> Tsl {
    Tsl::parse(lamp_json().to_string().as_bytes()).unwrap()
}

/// A TSL with one read-write property of the given data type, identified `p`.
fn one(data_type: Value) -> Tsl {
    let tsl =
        json!({ "properties": [ { "identifier": "p", "name": "p", "accessMode": "rw", "dataType": data_type } ] });
    Tsl::parse(tsl.to_string().as_bytes()).unwrap()
}

/// The refusal of a TSL with one property of the given data type, as `path: reason`.
fn refusal_of_type(data_type: Value) -> String {
    refusal(json!({ "properties": [ { "identifier": "p", "name": "p", "accessMode": "rw", "dataType": data_type } ] }))
}

fn refusal(tsl: Value) -> String {
    Tsl::parse(tsl.to_string().as_bytes()).unwrap_err().to_string()
}

fn params(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// The property check of `{"p": value}`: `Ok` when accepted, else the error as `field: reason`.
fn check(tsl: &Tsl, value: Value) -> Result<(), String> {
    let check = tsl.check_properties(&params(json!({ "p": value })));
    match check.error {
        None => {
            assert!(check.accepted.contains_key("p"));
            Ok(())
        }
        Some(error) => Err(error.to_string()),
    }
}

// --- parsing ---

#[test]
fn lamp_parses_into_typed_features() {
    let tsl = lamp();
    assert_eq!(tsl.properties.len(), 8);
    assert_eq!(tsl.schema.as_deref(), Some("https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json"));
    assert_eq!(tsl.profile.as_ref().unwrap()["productKey"], "a1lamp");

    let brightness = tsl.property("Brightness").unwrap();
    assert_eq!(brightness.access_mode, AccessMode::ReadWrite);
    assert_eq!(
        brightness.data_type,
        DataType::Int(IntSpecs {
            min: Some(0),
            max: Some(100),
            step: Some(1),
            unit: Some("%".into()),
            unit_name: Some("percent".into())
        })
    );
    assert_eq!(tsl.property("DeviceName").unwrap().data_type, DataType::Text(TextSpecs { length: 16 }));
    assert_eq!(tsl.property("DeviceName").unwrap().access_mode, AccessMode::ReadOnly);
    assert!(matches!(&tsl.property("Schedule").unwrap().data_type,
        DataType::Array(ArraySpecs { size: 4, item }) if matches!(**item, DataType::Struct(ref m) if m.len() == 2)));
    assert_eq!(
        tsl.property("Mode").unwrap().data_type,
        DataType::Enum([(0, "white".into()), (1, "colour".into()), (2, "scene".into())].into())
    );

    // The generated post event and set/get services are dropped; user-defined ones kept.
    assert_eq!(tsl.events.iter().map(|e| e.identifier.as_str()).collect::<Vec<_>>(), ["Overheat"]);
    assert_eq!(tsl.event("Overheat").unwrap().event_type, EventType::Alert);
    assert_eq!(tsl.services.iter().map(|s| s.identifier.as_str()).collect::<Vec<_>>(), ["Blink", "Fade"]);
    assert_eq!(tsl.service("Blink").unwrap().call_type, CallType::Sync);
    assert_eq!(tsl.service("Fade").unwrap().call_type, CallType::Async);
    assert_eq!(tsl.service("Blink").unwrap().method.as_deref(), Some("thing.service.Blink"));
}

#[test]
fn to_json_writes_aliyun_shape_and_round_trips() {
    let tsl = lamp();
    let json = tsl.to_json();
    let brightness = &json["properties"][1];
    assert_eq!(brightness["accessMode"], "rw");
    assert_eq!(
        brightness["dataType"],
        json!({ "type": "int", "specs": { "min": "0", "max": "100", "step": "1", "unit": "%", "unitName": "percent" } })
    );
    assert_eq!(json["properties"][6]["dataType"]["specs"]["max"], "4.5");
    assert_eq!(json["properties"][3]["dataType"]["specs"]["size"], "4");
    assert_eq!(json["events"][0]["outputData"][1]["dataType"]["specs"], json!({ "1": "warm", "2": "hot" }));
    assert_eq!(json["services"][0]["callType"], "sync");

    let again = Tsl::parse(json.to_string().as_bytes()).unwrap();
    assert_eq!(again, tsl);
    // Through serde too, as the gateway and the store will use it.
    let via_serde: Tsl = serde_json::from_value(serde_json::to_value(&tsl).unwrap()).unwrap();
    assert_eq!(via_serde, tsl);
}

#[test]
fn ignores_unknown_keys_and_accepts_bare_numbers_in_specs() {
    let tsl = Tsl::parse(
        json!({
            "link": "/sys/a1lamp/dev/thing/",
            "functionBlocks": [],
            "properties": [ { "identifier": "t", "name": "t", "accessMode": "r", "extra": 1,
                "dataType": { "type": "float", "specs": { "min": -5, "max": 5.5, "step": 0.5, "precision": "1" } } } ]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        tsl.properties[0].data_type,
        DataType::Float(FloatSpecs { min: Some(-5.0), max: Some(5.5), step: Some(0.5), ..FloatSpecs::default() })
    );
    assert!(tsl.events.is_empty() && tsl.services.is_empty());
}

#[test]
fn empty_document_is_an_empty_model() {
    assert_eq!(Tsl::parse(b"{}").unwrap(), Tsl::default());
}

#[test]
fn refuses_bad_json_and_non_objects() {
    assert!(refusal(json!([])).starts_with("tsl: not an object"));
    assert!(matches!(Tsl::parse(b"{"), Err(TslError::Json(_))));
    assert_eq!(refusal(json!({ "properties": {} })), "properties: not an array");
}

#[test]
fn refusals_name_the_field_path() {
    let mut tsl = lamp_json();
    tsl["properties"][2]["dataType"]["specs"][1]["dataType"]["specs"]["min"] = json!("abc");
    assert_eq!(refusal(tsl), "properties[2].dataType.specs[1].dataType.specs.min: not a number");

    let mut tsl = lamp_json();
    tsl["properties"][1]["dataType"]["specs"]["min"] = json!("x");
    assert_eq!(refusal(tsl), "properties[1].dataType.specs.min: not a number");

    let mut tsl = lamp_json();
    tsl["services"][2]["inputData"][0]["dataType"]["type"] = json!("long");
    assert_eq!(
        refusal(tsl),
        "services[2].inputData[0].dataType.type: unknown type \"long\" \
         (expected int, float, double, text, enum, bool, date, struct or array)"
    );

    let mut tsl = lamp_json();
    tsl["events"][1]["type"] = json!("warning");
    assert_eq!(refusal(tsl), "events[1].type: must be \"info\", \"alert\" or \"error\"");

    let mut tsl = lamp_json();
    tsl["services"][3]["callType"] = json!("later");
    assert_eq!(refusal(tsl), "services[3].callType: must be \"sync\" or \"async\"");

    let mut tsl = lamp_json();
    tsl["properties"][0]["accessMode"] = json!("w");
    assert_eq!(refusal(tsl), "properties[0].accessMode: must be \"r\" or \"rw\"");

    let mut tsl = lamp_json();
    tsl["properties"][0].as_object_mut().unwrap().remove("dataType");
    assert_eq!(refusal(tsl), "properties[0].dataType: missing");
}

#[test]
fn refuses_bad_number_specs() {
    let int = |specs: Value| refusal_of_type(json!({ "type": "int", "specs": specs }));
    assert_eq!(
        int(json!({ "min": "10", "max": "5" })),
        "properties[0].dataType.specs.min: min 10 is greater than max 5"
    );
    assert_eq!(int(json!({ "step": "0" })), "properties[0].dataType.specs.step: must be greater than 0");
    assert_eq!(int(json!({ "step": "-1" })), "properties[0].dataType.specs.step: must be greater than 0");
    assert_eq!(int(json!({ "min": "1.5" })), "properties[0].dataType.specs.min: not an integer");
    assert_eq!(
        int(json!({ "max": "3000000000" })),
        "properties[0].dataType.specs.max: outside the 32-bit integer range"
    );
    assert_eq!(int(json!({ "max": true })), "properties[0].dataType.specs.max: not a number");

    let float = |specs: Value| refusal_of_type(json!({ "type": "double", "specs": specs }));
    assert_eq!(
        float(json!({ "min": "1.5", "max": "1.25" })),
        "properties[0].dataType.specs.min: min 1.5 is greater than max 1.25"
    );
    assert_eq!(float(json!({ "step": "0.0" })), "properties[0].dataType.specs.step: must be greater than 0");
    assert_eq!(float(json!({ "max": "NaN" })), "properties[0].dataType.specs.max: not a number");
    assert_eq!(float(json!({ "max": "inf" })), "properties[0].dataType.specs.max: not a number");
    assert_eq!(refusal_of_type(json!({ "type": "int", "specs": [] })), "properties[0].dataType.specs: not an object");
}

#[test]
fn refuses_bad_text_enum_and_bool_specs() {
    let text = |length: Value| refusal_of_type(json!({ "type": "text", "specs": { "length": length } }));
    assert_eq!(text(json!("0")), "properties[0].dataType.specs.length: must be between 1 and 10240");
    assert_eq!(text(json!("10241")), "properties[0].dataType.specs.length: must be between 1 and 10240");
    assert_eq!(one(json!({ "type": "text", "specs": { "length": "10240" } })).properties.len(), 1);
    assert_eq!(one(json!({ "type": "text" })).properties[0].data_type, DataType::Text(TextSpecs { length: 10240 }));

    let enumeration = |specs: Value| refusal_of_type(json!({ "type": "enum", "specs": specs }));
    assert_eq!(enumeration(json!({ "a": "x" })), "properties[0].dataType.specs.a: enum key is not an integer");
    assert_eq!(enumeration(json!({ "1.5": "x" })), "properties[0].dataType.specs.1.5: enum key is not an integer");
    assert_eq!(enumeration(json!({ "1": 2 })), "properties[0].dataType.specs.1: not a string");
    assert_eq!(enumeration(json!({})), "properties[0].dataType.specs: an enum needs at least one value");
    assert_eq!(one(json!({ "type": "enum", "specs": { "-1": "neg" } })).properties.len(), 1);

    assert_eq!(
        refusal_of_type(json!({ "type": "bool", "specs": { "2": "maybe" } })),
        "properties[0].dataType.specs.2: a bool only names 0 and 1"
    );
}

#[test]
fn refuses_bad_array_and_struct_nesting() {
    let array = |specs: Value| refusal_of_type(json!({ "type": "array", "specs": specs }));
    let int_item = json!({ "type": "int", "specs": {} });
    assert_eq!(
        array(json!({ "size": "0", "item": int_item })),
        "properties[0].dataType.specs.size: must be between 1 and 512"
    );
    assert_eq!(
        array(json!({ "size": "513", "item": int_item })),
        "properties[0].dataType.specs.size: must be between 1 and 512"
    );
    assert_eq!(array(json!({ "item": int_item })), "properties[0].dataType.specs.size: missing");
    assert_eq!(array(json!({ "size": "3" })), "properties[0].dataType.specs.item: missing");
    assert_eq!(
        array(json!({ "size": "3", "item": { "type": "array", "specs": { "size": "2", "item": int_item } } })),
        "properties[0].dataType.specs.item.type: an array cannot hold arrays"
    );
    assert_eq!(
        array(json!({ "size": "3", "item": { "type": "bool", "specs": {} } })),
        "properties[0].dataType.specs.item.type: array items must be int, float, double, text or struct"
    );
    assert_eq!(one(json!({ "type": "array", "specs": { "size": "512", "item": int_item } })).properties.len(), 1);

    let member = |data_type: Value| json!({ "identifier": "m", "name": "m", "dataType": data_type });
    assert_eq!(
        refusal_of_type(
            json!({ "type": "struct", "specs": [ member(json!({ "type": "struct", "specs": [ member(int_item.clone()) ] })) ] })
        ),
        "properties[0].dataType.specs[0].dataType.type: a struct member cannot be a struct or an array"
    );
    assert_eq!(
        refusal_of_type(
            json!({ "type": "struct", "specs": [ member(json!({ "type": "array", "specs": { "size": "2", "item": int_item } })) ] })
        ),
        "properties[0].dataType.specs[0].dataType.type: a struct member cannot be a struct or an array"
    );
    assert_eq!(
        refusal_of_type(json!({ "type": "struct", "specs": [ member(int_item.clone()), member(int_item.clone()) ] })),
        "properties[0].dataType.specs[1].identifier: duplicate identifier \"m\" (first at properties[0].dataType.specs[0])"
    );
    assert_eq!(
        refusal_of_type(json!({ "type": "struct", "specs": [] })),
        "properties[0].dataType.specs: a struct needs at least one member"
    );
    assert_eq!(
        refusal_of_type(json!({ "type": "struct", "specs": {} })),
        "properties[0].dataType.specs: not an array of members"
    );
}

#[test]
fn refuses_bad_and_duplicate_identifiers() {
    let prop = |id: &str| json!({ "identifier": id, "name": "x", "accessMode": "r", "dataType": { "type": "date" } });
    let bad = "is not an identifier (a letter or _ then letters, digits or _, at most 50)";
    assert_eq!(refusal(json!({ "properties": [prop("1abc")] })), format!("properties[0].identifier: \"1abc\" {bad}"));
    assert_eq!(refusal(json!({ "properties": [prop("a-b")] })), format!("properties[0].identifier: \"a-b\" {bad}"));
    assert_eq!(refusal(json!({ "properties": [prop("")] })), format!("properties[0].identifier: \"\" {bad}"));
    let long = "a".repeat(51);
    assert_eq!(refusal(json!({ "properties": [prop(&long)] })), format!("properties[0].identifier: \"{long}\" {bad}"));
    assert!(Tsl::parse(json!({ "properties": [prop(&"a".repeat(50)), prop("_x9")] }).to_string().as_bytes()).is_ok());

    assert_eq!(
        refusal(json!({ "properties": [prop("a"), prop("a")] })),
        "properties[1].identifier: duplicate identifier \"a\" (first at properties[0])"
    );
    // Identifiers are unique across properties, events and services.
    assert_eq!(
        refusal(
            json!({ "properties": [prop("a")], "events": [ { "identifier": "a", "name": "a", "type": "info", "outputData": [] } ] })
        ),
        "events[0].identifier: duplicate identifier \"a\" (first at properties[0])"
    );
    assert_eq!(
        refusal(json!({ "properties": [prop("value")] })),
        "properties[0].identifier: \"value\" is reserved by the thing model"
    );
    assert_eq!(
        refusal(json!({ "services": [ { "identifier": "s", "name": "s", "callType": "sync",
            "inputData": [ { "identifier": "x", "name": "x", "dataType": { "type": "date" } },
                           { "identifier": "x", "name": "x", "dataType": { "type": "date" } } ] } ] })),
        "services[0].inputData[1].identifier: duplicate identifier \"x\" (first at services[0].inputData[0])"
    );
    assert_eq!(
        refusal(json!({ "properties": [ { "name": "x", "accessMode": "r", "dataType": { "type": "date" } } ] })),
        "properties[0].identifier: missing"
    );
}

// --- property posts ---

#[test]
fn int_values() {
    let tsl = one(json!({ "type": "int", "specs": { "min": "-10", "max": "100", "step": "1" } }));
    assert_eq!(check(&tsl, json!(-10)), Ok(()));
    assert_eq!(check(&tsl, json!(100)), Ok(()));
    assert_eq!(check(&tsl, json!(101)), Err("p: 101 is above max 100".into()));
    assert_eq!(check(&tsl, json!(-11)), Err("p: -11 is below min -10".into()));
    assert_eq!(check(&tsl, json!(5.5)), Err("p: 5.5 is not an integer".into()));
    assert_eq!(check(&tsl, json!(5.0)), Err("p: 5.0 is not an integer".into()));
    assert_eq!(check(&tsl, json!("5")), Err("p: \"5\" is not an integer".into()));
    let unbounded = one(json!({ "type": "int", "specs": {} }));
    assert_eq!(check(&unbounded, json!(i64::from(i32::MAX))), Ok(()));
    assert_eq!(
        check(&unbounded, json!(i64::from(i32::MAX) + 1)),
        Err("p: 2147483648 is outside the 32-bit integer range".into())
    );
    assert_eq!(check(&unbounded, json!(u64::MAX)), Err(format!("p: {} is outside the 32-bit integer range", u64::MAX)));
}

#[test]
fn float_and_double_values() {
    for ty in ["float", "double"] {
        let tsl = one(json!({ "type": ty, "specs": { "min": "0.5", "max": "4.5", "step": "0.1" } }));
        assert_eq!(check(&tsl, json!(0.5)), Ok(()));
        assert_eq!(check(&tsl, json!(3)), Ok(()), "integers are numbers");
        assert_eq!(check(&tsl, json!(4.51)), Err("p: 4.51 is above max 4.5".into()));
        assert_eq!(check(&tsl, json!(0)), Err("p: 0 is below min 0.5".into()));
        assert_eq!(check(&tsl, json!("1.0")), Err("p: \"1.0\" is not a number".into()));
        assert_eq!(check(&tsl, json!(null)), Err("p: null is not a number".into()));
    }
}

#[test]
fn text_values() {
    let tsl = one(json!({ "type": "text", "specs": { "length": "3" } }));
    assert_eq!(check(&tsl, json!("abc")), Ok(()));
    assert_eq!(check(&tsl, json!("温度计")), Ok(()), "length counts characters, not bytes");
    assert_eq!(check(&tsl, json!("")), Ok(()));
    assert_eq!(check(&tsl, json!("abcd")), Err("p: 4 characters, longer than 3".into()));
    assert_eq!(check(&tsl, json!(1)), Err("p: 1 is not a string".into()));
}

#[test]
fn enum_values() {
    let tsl = one(json!({ "type": "enum", "specs": { "0": "white", "1": "colour", "2": "scene" } }));
    assert_eq!(check(&tsl, json!(2)), Ok(()));
    assert_eq!(check(&tsl, json!(3)), Err("p: 3 is not one of 0, 1, 2".into()));
    assert_eq!(check(&tsl, json!("1")), Err("p: \"1\" is not an integer".into()));
    assert_eq!(check(&tsl, json!(1.0)), Err("p: 1.0 is not an integer".into()));
}

#[test]
fn bool_values() {
    let tsl = one(json!({ "type": "bool", "specs": { "0": "off", "1": "on" } }));
    for ok in [json!(0), json!(1), json!(true), json!(false)] {
        assert_eq!(check(&tsl, ok), Ok(()));
    }
    assert_eq!(check(&tsl, json!(2)), Err("p: 2 is not 0 or 1".into()));
    assert_eq!(check(&tsl, json!("1")), Err("p: \"1\" is not 0 or 1".into()));
    assert_eq!(check(&tsl, json!(1.0)), Err("p: 1.0 is not 0 or 1".into()));
}

#[test]
fn date_values() {
    let tsl = one(json!({ "type": "date", "specs": {} }));
    assert_eq!(check(&tsl, json!("1524448722000")), Ok(()));
    assert_eq!(check(&tsl, json!(1524448722000_u64)), Ok(()));
    assert_eq!(
        check(&tsl, json!("+1524448722000")),
        Err("p: \"+1524448722000\" is not a UTC millisecond timestamp".into())
    );
    assert_eq!(check(&tsl, json!("2024-01-01")), Err("p: \"2024-01-01\" is not a UTC millisecond timestamp".into()));
    assert_eq!(check(&tsl, json!(-1)), Err("p: -1 is not a UTC millisecond timestamp".into()));
    assert_eq!(check(&tsl, json!("")), Err("p: \"\" is not a UTC millisecond timestamp".into()));
}

#[test]
fn struct_values() {
    let tsl = lamp();
    let post = |value: Value| tsl.check_properties(&params(json!({ "Colour": value }))).error.map(|e| e.to_string());
    assert_eq!(post(json!({ "red": 255, "green": 0, "blue": 10 })), None);
    assert_eq!(post(json!({ "red": 255 })), None, "members may be omitted");
    assert_eq!(post(json!({ "red": 256 })), Some("Colour.red: 256 is above max 255".into()));
    assert_eq!(post(json!({ "alpha": 1 })), Some("Colour.alpha: unknown member".into()));
    assert_eq!(post(json!([1, 2, 3])), Some("Colour: an array is not an object".into()));
}

#[test]
fn array_values() {
    let tsl = lamp();
    let post = |value: Value| tsl.check_properties(&params(json!({ "Schedule": value }))).error.map(|e| e.to_string());
    assert_eq!(post(json!([])), None);
    assert_eq!(post(json!([ { "hour": 7, "on": 1 }, { "hour": 23, "on": 0 } ])), None);
    assert_eq!(post(json!([ { "hour": 7 }, { "hour": 24 } ])), Some("Schedule[1].hour: 24 is above max 23".into()));
    assert_eq!(post(json!([{}, {}, {}, {}, {}])), Some("Schedule: 5 items, more than 4".into()));
    assert_eq!(post(json!([1])), Some("Schedule[0]: 1 is not an object".into()));
    assert_eq!(post(json!({ "hour": 1 })), Some("Schedule: an object is not an array".into()));

    let ints =
        one(json!({ "type": "array", "specs": { "size": "3", "item": { "type": "int", "specs": { "max": "9" } } } }));
    assert_eq!(check(&ints, json!([1, 2, 9])), Ok(()));
    assert_eq!(check(&ints, json!([1, 10])), Err("p[1]: 10 is above max 9".into()));
}

#[test]
fn property_post_accepts_plain_and_timed_values_and_drops_unknown() {
    let tsl = lamp();
    let post = params(json!({
        "LightSwitch": 1,
        "Brightness": { "value": 80, "time": 1524448722000_u64 },
        "Mode": { "value": 2 },
        "Humidity": 40,
        "Colour": { "red": 1, "green": 2, "blue": 3 }
    }));
    let check = tsl.check_properties(&post);
    assert_eq!(check.error, None);
    assert_eq!(check.unknown, ["Humidity"]);
    assert_eq!(check.accepted.len(), 4);
    // Accepted values are kept as given, `{value, time}` included, for the caller to store.
    assert_eq!(check.accepted["Brightness"], json!({ "value": 80, "time": 1524448722000_u64 }));
}

#[test]
fn property_post_error_names_the_property() {
    let tsl = lamp();
    let check = tsl.check_properties(&params(json!({ "LightSwitch": 1, "Brightness": 150 })));
    let error = check.error.unwrap();
    assert_eq!((error.field.as_str(), error.reason.as_str()), ("Brightness", "150 is above max 100"));
    assert!(check.accepted.contains_key("LightSwitch"));

    let timed =
        |value: Value| tsl.check_properties(&params(json!({ "Brightness": value }))).error.map(|e| e.to_string());
    assert_eq!(timed(json!({ "value": 101, "time": 1 })), Some("Brightness.value: 101 is above max 100".into()));
    assert_eq!(
        timed(json!({ "value": 1, "time": "soon" })),
        Some("Brightness.time: not a UTC millisecond timestamp".into())
    );
    assert_eq!(timed(json!({ "value": 1, "extra": 1 })), Some("Brightness: an object is not an integer".into()));
}

#[test]
fn read_only_properties_may_be_posted() {
    let tsl = lamp();
    let check =
        tsl.check_properties(&params(json!({ "DeviceName": "lamp-1", "Voltage": 3.3, "LastOn": "1524448722000" })));
    assert_eq!(check.error, None);
    assert_eq!(check.accepted.len(), 3);
}

// --- events, services, sets ---

#[test]
fn event_post_is_checked_against_output_data() {
    let tsl = lamp();
    let check = |params: Value| tsl.check_event("Overheat", &params).map_err(|e| e.to_string());
    assert_eq!(check(json!({ "value": { "temperature": 90.5, "level": 2 }, "time": 1524448722000_u64 })), Ok(()));
    assert_eq!(check(json!({ "temperature": 90.5, "level": 1 })), Ok(()), "bare params are accepted too");
    assert_eq!(check(json!({ "value": { "level": 3 } })), Err("level: 3 is not one of 1, 2".into()));
    assert_eq!(check(json!({ "value": { "temperature": 200 } })), Err("temperature: 200 is above max 150".into()));
    assert_eq!(check(json!({ "value": { "smoke": 1 } })), Err("smoke: unknown member".into()));
    assert_eq!(check(json!({ "value": {}, "time": -5 })), Err("time: not a UTC millisecond timestamp".into()));
    assert_eq!(check(json!({ "value": 7 })), Err("params: 7 is not an object".into()));
    assert_eq!(
        tsl.check_event("Smoke", &json!({})).map_err(|e| e.to_string()),
        Err("Smoke: not an event of the thing model".into())
    );
}

#[test]
fn service_reply_and_invocation_are_checked() {
    let tsl = lamp();
    assert_eq!(tsl.check_service_output("Blink", &json!({ "done": 1 })), Ok(()));
    assert_eq!(tsl.check_service_output("Fade", &json!({})), Ok(()));
    assert_eq!(tsl.check_service_output("Fade", &Value::Null), Ok(()));
    assert_eq!(
        tsl.check_service_output("Blink", &json!({ "done": 5 })).unwrap_err().to_string(),
        "done: 5 is not 0 or 1"
    );
    assert_eq!(
        tsl.check_service_output("Fade", &json!({ "progress": 1 })).unwrap_err().to_string(),
        "progress: unknown member"
    );
    assert_eq!(
        tsl.check_service_output("Blink", &json!("ok")).unwrap_err().to_string(),
        "data: \"ok\" is not an object"
    );
    assert_eq!(
        tsl.check_service_output("Reboot", &json!({})).unwrap_err().to_string(),
        "Reboot: not a service of the thing model"
    );

    assert_eq!(tsl.check_service_input("Blink", &json!({ "times": 3 })), Ok(()));
    assert_eq!(
        tsl.check_service_input("Blink", &json!({ "times": 0 })).unwrap_err().to_string(),
        "times: 0 is below min 1"
    );
    assert_eq!(tsl.check_service_input("Fade", &json!({ "seconds": 0.5 })), Ok(()));
}

#[test]
fn property_set_only_takes_read_write_properties() {
    let tsl = lamp();
    assert_eq!(tsl.check_set(&params(json!({ "LightSwitch": 1, "Brightness": 30, "Mode": 0 }))), Ok(()));
    assert_eq!(
        tsl.check_set(&params(json!({ "DeviceName": "x" }))).unwrap_err().to_string(),
        "DeviceName: read-only property"
    );
    assert_eq!(
        tsl.check_set(&params(json!({ "Humidity": 1 }))).unwrap_err().to_string(),
        "Humidity: not a property of the thing model"
    );
    assert_eq!(
        tsl.check_set(&params(json!({ "Colour": { "red": -1 } }))).unwrap_err().to_string(),
        "Colour.red: -1 is below min 0"
    );
}

// --- robustness ---

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        prop_oneof![
            "[a-z]{0,6}",
            "-?[0-9]{1,12}(\\.[0-9]{1,3})?",
            Just("int".to_owned()),
            Just("struct".to_owned()),
            Just("array".to_owned()),
            Just("enum".to_owned()),
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("identifier".to_owned()),
        Just("name".to_owned()),
        Just("accessMode".to_owned()),
        Just("dataType".to_owned()),
        Just("type".to_owned()),
        Just("specs".to_owned()),
        Just("min".to_owned()),
        Just("max".to_owned()),
        Just("size".to_owned()),
        Just("item".to_owned()),
        Just("length".to_owned()),
        Just("value".to_owned()),
        Just("time".to_owned()),
        "[a-z0-9]{1,4}",
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics(value in arbitrary_json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Tsl::parse(&bytes);
        let _ = Tsl::parse(value.to_string().as_bytes());
        let _ = Tsl::parse(json!({ "properties": [value.clone()], "events": [value.clone()], "services": [value] }).to_string().as_bytes());
    }

    #[test]
    fn checks_never_panic(value in arbitrary_json(), key in "[A-Za-z]{1,12}") {
        let tsl = lamp();
        let mut post = Map::new();
        for id in ["LightSwitch", "Brightness", "Colour", "Schedule", "Mode", "DeviceName", "Voltage", "LastOn"] {
            post.insert(id.to_owned(), value.clone());
        }
        post.insert(key, value.clone());
        let check = tsl.check_properties(&post);
        prop_assert!(check.accepted.len() + check.unknown.len() <= post.len());
        let _ = tsl.check_set(&post);
        let _ = tsl.check_event("Overheat", &value);
        let _ = tsl.check_service_output("Blink", &value);
        let _ = tsl.check_service_input("Fade", &value);
    }

    #[test]
    fn parsed_models_round_trip(value in arbitrary_json()) {
        let doc = json!({ "properties": [ { "identifier": "p", "name": "p", "accessMode": "rw", "dataType": value } ] });
        if let Ok(tsl) = Tsl::parse(doc.to_string().as_bytes()) {
            prop_assert_eq!(Tsl::parse(tsl.to_json().to_string().as_bytes()).unwrap(), tsl);
        }
    }
}
