//! The thing resources of the tenant API: thing models, latest properties, tags, desired
//! properties and the shadow, their validation and their isolation between tenants.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_tests::{Api, Device, DeviceCredentials, TestPlatform, eventually};

/// A lamp: a read-only bounded int, a read-write enum, a read-write short text.
fn lamp() -> Value {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": { "productKey": "lamp" },
        "properties": [
            { "identifier": "Temp", "name": "temperature", "accessMode": "r", "required": false,
              "dataType": { "type": "int", "specs": { "min": "-20", "max": 60, "unit": "°C" } } },
            { "identifier": "Mode", "name": "mode", "accessMode": "rw",
              "dataType": { "type": "enum", "specs": { "0": "off", "1": "on", "2": "blink" } } },
            { "identifier": "Label", "name": "label", "accessMode": "rw",
              "dataType": { "type": "text", "specs": { "length": "8" } } }
        ],
        "events": [
            { "identifier": "post", "name": "post", "type": "info", "method": "thing.event.property.post",
              "outputData": [] },
            { "identifier": "Overheat", "name": "overheat", "type": "alert",
              "outputData": [ { "identifier": "level", "name": "level",
                                "dataType": { "type": "int", "specs": { "min": "1", "max": "3" } } } ] }
        ],
        "services": [
            { "identifier": "Blink", "name": "blink", "callType": "async",
              "inputData": [ { "identifier": "times", "name": "times",
                               "dataType": { "type": "int", "specs": { "min": "1", "max": "10" } } } ],
              "outputData": [] }
        ]
    })
}

fn model_path(pk: &str) -> String {
    format!("/products/{pk}/thing-model")
}

fn device_path(creds: &DeviceCredentials, suffix: &str) -> String {
    format!("/products/{}/devices/{}{suffix}", creds.product_key, creds.device_name)
}

/// A device of a product that has the lamp thing model.
async fn lamp_device(platform: &TestPlatform) -> DeviceCredentials {
    let pk = platform.create_product().await;
    let (status, body) = platform.api.put(&model_path(&pk), lamp()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    platform.register_device(&pk).await
}

/// Asserts a 400 `InvalidArgument` whose message names `field`.
fn assert_invalid(response: &(StatusCode, Value), field: &str) {
    let (status, body) = response;
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "InvalidArgument", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(field), "message does not name {field}: {body}");
}

async fn other_tenant(platform: &TestPlatform) -> Api {
    let (status, tenant) = platform.api.post("/tenants", json!({"name": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    platform.api.with_key(tenant["apiKey"].as_str().unwrap())
}

#[tokio::test]
async fn a_thing_model_round_trips_and_a_bad_one_names_the_field() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = platform.create_product().await;
    let (status, body) = api.get(&model_path(&pk)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{body}");

    let (status, stored) = api.put(&model_path(&pk), lamp()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    // Spec numbers come back as Aliyun writes them; the generated `post` event is not kept.
    assert_eq!(stored["properties"][0]["dataType"]["specs"]["max"], "60");
    assert_eq!(stored["properties"][0]["dataType"]["specs"]["unit"], "°C");
    assert_eq!(stored["properties"][1]["accessMode"], "rw");
    assert_eq!(stored["events"].as_array().unwrap().len(), 1);
    assert_eq!(stored["events"][0]["identifier"], "Overheat");
    assert_eq!(stored["services"][0]["inputData"][0]["identifier"], "times");
    assert_eq!(stored["profile"], json!({"productKey": "lamp"}));
    let (status, fetched) = api.get(&model_path(&pk)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, stored);

    // A refused thing model names the offending field and leaves the stored one in place.
    let mut bad = lamp();
    bad["properties"][2]["dataType"] = json!({"type": "int", "specs": {"min": "0", "max": "high"}});
    assert_invalid(&api.put(&model_path(&pk), bad).await, "properties[2].dataType.specs.max");
    let mut bad = lamp();
    bad["events"][1]["outputData"][0]["dataType"]["type"] = json!("colour");
    assert_invalid(&api.put(&model_path(&pk), bad).await, "events[1].outputData[0].dataType.type");
    assert_invalid(&api.put(&model_path(&pk), json!({"properties": {}})).await, "properties");
    assert_invalid(&api.put(&model_path(&pk), json!([1, 2])).await, "tsl");
    assert_eq!(api.get(&model_path(&pk)).await.1, stored);

    // A product that is not there has no thing model to read or write.
    assert_eq!(api.get(&model_path("noSuchProduct")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.put(&model_path("noSuchProduct"), lamp()).await.0, StatusCode::NOT_FOUND);
    platform.stop().await;
}

#[tokio::test]
async fn a_thing_model_of_a_quarter_megabyte_is_accepted() {
    let platform = TestPlatform::start().await;
    let pk = platform.create_product().await;
    let properties: Vec<Value> = (0..200)
        .map(|i| {
            json!({ "identifier": format!("p{i}"), "name": format!("property {i}"), "accessMode": "rw",
                    "desc": "d".repeat(1200),
                    "dataType": { "type": "double", "specs": { "min": "-1000.5", "max": "1000.5" } } })
        })
        .collect();
    let tsl = json!({ "properties": properties });
    assert!(tsl.to_string().len() > 250 * 1024);
    let (status, body) = platform.api.put(&model_path(&pk), tsl).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["properties"].as_array().unwrap().len(), 200);
    platform.stop().await;
}

#[tokio::test]
async fn another_tenant_cannot_reach_thing_resources() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let shadow = json!({"method": "update", "state": {"desired": {"on": true}}, "version": 1});
    assert_eq!(platform.api.put(&device_path(&creds, "/shadow"), shadow.clone()).await.0, StatusCode::OK);
    let acme = other_tenant(&platform).await;
    // acme's own product, to show it is the resource that is refused, not the key.
    let (status, _) = acme.post("/products", json!({"name": "acme lamp"})).await;
    assert_eq!(status, StatusCode::CREATED);

    let model = model_path(&creds.product_key);
    for (what, (status, body)) in [
        ("get thing model", acme.get(&model).await),
        ("put thing model", acme.put(&model, json!({"properties": []})).await),
        ("properties", acme.get(&device_path(&creds, "/properties")).await),
        ("tags", acme.get(&device_path(&creds, "/tags")).await),
        ("get desired", acme.get(&device_path(&creds, "/desired-properties")).await),
        ("put desired", acme.put(&device_path(&creds, "/desired-properties"), json!({"items": {"Mode": 1}})).await),
        ("get shadow", acme.get(&device_path(&creds, "/shadow")).await),
        (
            "put shadow",
            acme.put(
                &device_path(&creds, "/shadow"),
                json!({"method": "update", "state": {"desired": {"on": false}}, "version": 2}),
            )
            .await,
        ),
    ] {
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{what}: {body}");
    }

    // Nothing acme tried changed the owner's data.
    let (_, stored) = platform.api.get(&model).await;
    assert_eq!(stored["properties"].as_array().unwrap().len(), 3);
    let (_, desired) = platform.api.get(&device_path(&creds, "/desired-properties")).await;
    assert_eq!(desired, json!({"items": {}}));
    let (_, document) = platform.api.get(&device_path(&creds, "/shadow")).await;
    assert_eq!((document["version"].as_i64(), &document["state"]["desired"]), (Some(1), &json!({"on": true})));

    // A device name the product does not have is 404 for its owner too.
    let missing = DeviceCredentials { device_name: "nobody".into(), ..creds.clone() };
    assert_eq!(platform.api.get(&device_path(&missing, "/shadow")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(platform.api.get(&device_path(&missing, "/properties")).await.0, StatusCode::NOT_FOUND);
    platform.stop().await;
}

#[tokio::test]
async fn latest_properties_and_tags_are_readable() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let (status, body) = platform.api.get(&device_path(&creds, "/properties")).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"items": {}})));
    let (status, body) = platform.api.get(&device_path(&creds, "/tags")).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"items": []})));
    let (_, body) = platform.api.get(&device_path(&creds, "")).await;
    assert_eq!(body["tags"], json!([]));

    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let post = json!({"id": "1", "params": {"Temp": {"value": 21, "time": 1700000000000_i64}, "Mode": 2}});
    let reply = device.request(&creds, "thing/event/property/post", post.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let tags = json!({"id": "2", "params": [{"attrKey": "room", "attrValue": "hall"}, {"attrKey": "floor", "attrValue": "2"}]});
    let reply = device.request(&creds, "thing/deviceinfo/update", tags.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");

    let items = eventually("latest properties", Duration::from_secs(10), || async {
        let (_, body) = platform.api.get(&device_path(&creds, "/properties")).await;
        (body["items"].as_object().is_some_and(|items| items.len() == 2)).then(|| body["items"].clone())
    })
    .await;
    assert_eq!(items["Temp"], json!({"value": 21, "time": 1700000000000_i64}));
    assert_eq!(items["Mode"]["value"], 2);
    assert!(items["Mode"]["time"].as_i64().is_some_and(|t| t > 1700000000000), "{items}");

    let expected = json!([{"attrKey": "floor", "attrValue": "2"}, {"attrKey": "room", "attrValue": "hall"}]);
    let (_, body) = platform.api.get(&device_path(&creds, "/tags")).await;
    assert_eq!(body["items"], expected);
    let (_, body) = platform.api.get(&device_path(&creds, "")).await;
    assert_eq!(body["tags"], expected);
    assert_eq!(body["deviceName"], creds.device_name.as_str());
    platform.stop().await;
}

#[tokio::test]
async fn desired_properties_are_versioned_and_checked_against_the_thing_model() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let path = device_path(&creds, "/desired-properties");
    assert_eq!(platform.api.get(&path).await, (StatusCode::OK, json!({"items": {}})));

    let (status, body) = platform.api.put(&path, json!({"items": {"Mode": 2}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["items"]["Mode"]["value"].as_i64(), body["items"]["Mode"]["version"].as_i64()),
        (Some(2), Some(1))
    );
    let (status, body) = platform.api.put(&path, json!({"items": {"Mode": 1, "Label": "eco"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"]["Mode"]["version"], 2);
    assert_eq!(body["items"]["Label"]["version"], 1);
    let (status, fetched) = platform.api.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);
    assert_eq!(fetched["items"]["Mode"]["value"], 1);
    assert!(fetched["items"]["Label"]["time"].as_i64().is_some_and(|t| t > 1700000000000), "{fetched}");

    // Only read-write properties of the thing model, with conforming values; nothing is stored
    // from a refused set.
    assert_invalid(&platform.api.put(&path, json!({"items": {"Mode": 7}})).await, "items.Mode");
    assert_invalid(&platform.api.put(&path, json!({"items": {"Label": "much too long"}})).await, "items.Label");
    assert_invalid(&platform.api.put(&path, json!({"items": {"Mode": 0, "Temp": 20}})).await, "items.Temp");
    assert_invalid(&platform.api.put(&path, json!({"items": {"Colour": "red"}})).await, "items.Colour");
    assert_invalid(&platform.api.put(&path, json!({"items": {}})).await, "items");
    assert_invalid(&platform.api.put(&path, json!({"values": {"Mode": 1}})).await, "values");
    assert_eq!(platform.api.get(&path).await.1, fetched);

    // Without a thing model any property is accepted.
    let free = platform.device().await;
    let (status, body) =
        platform.api.put(&device_path(&free, "/desired-properties"), json!({"items": {"Anything": [1, 2]}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"]["Anything"]["value"], json!([1, 2]));
    platform.stop().await;
}

#[tokio::test]
async fn the_shadow_follows_aliyun_version_rules() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let path = device_path(&creds, "/shadow");
    let update =
        |desired: Value, version: i64| json!({"method": "update", "state": {"desired": desired}, "version": version});
    let (status, body) = platform.api.get(&path).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{body}");

    let (status, document) = platform.api.put(&path, update(json!({"color": "green", "level": 3}), 1)).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["version"], 1);
    assert_eq!(document["state"], json!({"desired": {"color": "green", "level": 3}}));
    assert!(document["metadata"]["desired"]["color"]["timestamp"].as_i64().is_some(), "{document}");
    assert_eq!(platform.api.get(&path).await, (StatusCode::OK, document.clone()));

    // A version that is not greater than the shadow's is refused; the document stays.
    assert_invalid(&platform.api.put(&path, update(json!({"color": "red"}), 1)).await, "version");
    assert_eq!(platform.api.get(&path).await.1, document);

    // Attributes merge, `null` removes one, version 0 skips the check and counts up.
    let (status, document) = platform.api.put(&path, update(json!({"level": null, "mode": "eco"}), 0)).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["version"], 2);
    assert_eq!(document["state"]["desired"], json!({"color": "green", "mode": "eco"}));
    let (status, document) = platform.api.put(&path, update(json!({"mode": "night"}), 7)).await;
    assert_eq!((status, document["version"].as_i64()), (StatusCode::OK, Some(7)), "{document}");

    // -1 clears the shadow, applies the request and leaves version 0.
    let (status, document) = platform.api.put(&path, update(json!({"color": "blue"}), -1)).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["version"], 0);
    assert_eq!(document["state"], json!({"desired": {"color": "blue"}}));
    assert_eq!(platform.api.get(&path).await.1, document);
    assert_invalid(&platform.api.put(&path, update(json!({"color": "red"}), -2)).await, "version");
    assert_eq!(platform.api.put(&path, update(json!({"color": "red"}), 1)).await.0, StatusCode::OK);

    // The message must be Aliyun's ShadowMessage with a desired state.
    assert_invalid(&platform.api.put(&path, json!({"method": "update", "version": 5})).await, "state.desired");
    assert_invalid(&platform.api.put(&path, update(json!({}), 5)).await, "state.desired");
    assert_invalid(&platform.api.put(&path, update(json!("null"), 5)).await, "state.desired");
    let get = json!({"method": "get", "state": {"desired": {"a": 1}}, "version": 5});
    assert_invalid(&platform.api.put(&path, get).await, "method");
    assert_invalid(
        &platform.api.put(&path, json!({"method": "update", "state": {"desired": {"a": 1}}})).await,
        "version",
    );
    let reported = json!({"method": "update", "state": {"desired": {"a": 1}, "reported": {"a": 2}}, "version": 5});
    assert_invalid(&platform.api.put(&path, reported).await, "reported");
    assert_eq!(platform.api.get(&path).await.1["version"], 1);
    platform.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_thing_resources() {
    let platform = TestPlatform::start().await;
    let (status, doc) = platform.api.with_key("").get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = &doc["paths"];
    let device = "/api/v1/products/{productKey}/devices/{deviceName}";
    for (path, methods) in [
        ("/api/v1/products/{productKey}/thing-model".to_owned(), &["get", "put"][..]),
        (format!("{device}/properties"), &["get"][..]),
        (format!("{device}/tags"), &["get"][..]),
        (format!("{device}/desired-properties"), &["get", "put"][..]),
        (format!("{device}/shadow"), &["get", "put"][..]),
    ] {
        for method in methods {
            assert!(paths[&path][method].is_object(), "{method} {path} missing");
        }
    }
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "ThingModel",
        "LatestProperties",
        "TagList",
        "DesiredProperties",
        "SetDesiredRequest",
        "ShadowUpdateRequest",
        "ShadowDocument",
    ] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    assert!(schemas["DeviceView"]["properties"]["tags"].is_object(), "DeviceView has no tags");
    platform.stop().await;
}
