//! The thing service over a real gRPC socket: the cluster-mode client gets exactly what the
//! service says (values, documents, answers to device requests, and errors with their kind and
//! field), and JSON the server cannot read is refused as an invalid argument.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_bus::events::{self, Origin};
use tether_bus::{Bus, InProcessBus};
use tether_contract::{
    DesiredValue, DeviceMessage, DeviceRef, DeviceRequest, PropertySnapshot, ServiceError, Tag, ThingGrpcClient,
    ThingGrpcServer, ThingService, TimedValue,
};
use tether_model::{DeviceKey, ProductKey, TenantId, Tsl};
use tether_proto::v1 as pb;
use tether_proto::v1::thing_client::ThingClient;
use tether_store::{FjallStore, KvStore, LocalRoutes};
use tether_thing::Thing;

/// A thing service served on a free port, and what it runs on.
struct Served {
    client: ThingGrpcClient,
    url: String,
    thing: Arc<Thing>,
    bus: InProcessBus,
    _dir: tempfile::TempDir,
}

/// Serves `service` as `tether.v1.Thing` on a free port; returns its URL.
async fn serve_grpc(service: Arc<dyn ThingService>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ThingGrpcServer::new(service).into_service())
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
    let routes = Arc::new(LocalRoutes::open(store.clone(), 0).await.unwrap());
    let bus = InProcessBus::new();
    let thing = Arc::new(Thing::new(store, Arc::new(bus.clone()), routes));
    let url = serve_grpc(thing.clone()).await;
    Served { client: ThingGrpcClient::new(&url).unwrap(), url, thing, bus, _dir: dir }
}

fn lamp_model() -> Tsl {
    let json = json!({
        "properties": [
            { "identifier": "Temp", "name": "temperature", "accessMode": "r",
              "dataType": { "type": "int", "specs": { "min": "-20", "max": "60" } } },
            { "identifier": "Mode", "name": "mode", "accessMode": "rw",
              "dataType": { "type": "enum", "specs": { "0": "off", "1": "on" } } }
        ],
        "events": [],
        "services": []
    });
    Tsl::parse(json.to_string().as_bytes()).unwrap()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn lamp_device() -> DeviceKey {
    DeviceKey::parse("lamp", "lamp-1").unwrap()
}

fn request_from(device: &DeviceKey, topic: &str, payload: Value) -> DeviceRequest {
    DeviceRequest {
        from: DeviceRef { tenant: TenantId::new("t1").unwrap(), device: device.clone(), iot_id: "iot-1".into() },
        topic: topic.to_owned(),
        payload: Bytes::from(payload.to_string()),
    }
}

fn reply_body(message: &DeviceMessage) -> Value {
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test]
async fn thing_models_and_device_state_cross_the_wire_intact() {
    let served = serve().await;
    let client = &served.client;
    let lamp = ProductKey::new("lamp").unwrap();
    let device = lamp_device();

    // Thing models.
    assert_eq!(client.get_thing_model(&lamp).await, Ok(None));
    client.put_thing_model(&lamp, lamp_model()).await.unwrap();
    assert_eq!(client.get_thing_model(&lamp).await, Ok(Some(lamp_model())));

    // Latest properties, kept from a property post on the bus.
    let keeper = served.thing.run_consumers().await.unwrap();
    assert_eq!(client.latest_properties(&device).await, Ok(PropertySnapshot::new()));
    let tenant = TenantId::new("t1").unwrap();
    let origin = Origin { tenant: &tenant, device: &device, iot_id: "iot-1" };
    let params = object(json!({ "Temp": 21, "Mode": { "value": 1, "time": 1_700_000_000_000_i64 } }));
    served.bus.publish_durable(events::property_post(origin, "1", &params, 1_700_000_000_500)).await.unwrap();
    let expected = PropertySnapshot::from([
        ("Mode".to_owned(), TimedValue { value: json!(1), time: 1_700_000_000_000 }),
        ("Temp".to_owned(), TimedValue { value: json!(21), time: 1_700_000_000_500 }),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = client.latest_properties(&device).await.unwrap();
        if snapshot == expected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "latest properties never became {expected:?}: {snapshot:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    keeper.abort();

    // Tags, set by the device's own request and answered on its reply topic.
    assert_eq!(client.tags(&device).await, Ok(Vec::new()));
    let update = json!({ "id": "7", "version": "1.0",
                         "params": [{ "attrKey": "room", "attrValue": "hall" }, { "attrKey": "floor", "attrValue": "2" }] });
    let answer = client
        .device_request(request_from(&device, "/sys/lamp/lamp-1/thing/deviceinfo/update", update))
        .await
        .unwrap()
        .expect("tags update is answered");
    assert_eq!(answer.topic, "/sys/lamp/lamp-1/thing/deviceinfo/update_reply");
    assert_eq!((reply_body(&answer)["id"].clone(), reply_body(&answer)["code"].clone()), (json!("7"), json!(200)));
    let tag = |k: &str, v: &str| Tag { attr_key: k.into(), attr_value: v.into() };
    assert_eq!(client.tags(&device).await, Ok(vec![tag("floor", "2"), tag("room", "hall")]));

    // Desired properties: each set bumps the identifier's version.
    assert_eq!(client.desired_properties(&device).await, Ok(BTreeMap::new()));
    let first = client.set_desired_properties(&device, object(json!({ "Mode": 1, "Label": "a\"b" }))).await.unwrap();
    assert_eq!((first["Mode"].version, &first["Label"].value), (1, &json!("a\"b")));
    let second = client.set_desired_properties(&device, object(json!({ "Mode": 0 }))).await.unwrap();
    let DesiredValue { value, version, .. } = &second["Mode"];
    assert_eq!((value, *version), (&json!(0), 2));
    assert_eq!(client.desired_properties(&device).await, Ok(second));

    // Shadow: set from the cloud, read back, and updated by the device.
    assert_eq!(client.get_shadow(&device).await, Ok(None));
    let document = client.update_shadow(&device, object(json!({ "color": "green" })), 1).await.unwrap();
    assert_eq!(document["state"]["desired"]["color"], "green", "{document}");
    assert_eq!(client.get_shadow(&device).await, Ok(Some(document.clone())));
    let report = json!({ "method": "update", "state": { "reported": { "color": "green" } }, "version": 2 });
    let answer = client.device_request(request_from(&device, "/shadow/update/lamp/lamp-1", report)).await.unwrap();
    let answer = answer.expect("shadow update is answered");
    assert_eq!(answer.topic, "/shadow/get/lamp/lamp-1");
    assert_eq!(reply_body(&answer)["payload"]["status"], "success", "{}", reply_body(&answer));
    let stored = client.get_shadow(&device).await.unwrap().unwrap();
    assert_eq!(stored["state"]["reported"]["color"], "green", "{stored}");
}

#[tokio::test]
async fn service_errors_keep_their_kind_and_field() {
    let served = serve().await;
    let client = &served.client;
    let device = lamp_device();

    let empty = client.set_desired_properties(&device, Map::new()).await;
    assert_eq!(empty, Err(ServiceError::invalid("items", "must name at least one property")));

    client.update_shadow(&device, object(json!({ "color": "red" })), 5).await.unwrap();
    let stale = client.update_shadow(&device, object(json!({ "color": "blue" })), 5).await.unwrap_err();
    assert!(matches!(&stale, ServiceError::Invalid { field, .. } if field == "version"), "{stale:?}");
    // Exactly what the service itself answers.
    let direct = served.thing.update_shadow(&device, object(json!({ "color": "blue" })), 5).await;
    assert_eq!(Err(stale), direct);

    // A device may only use its own topics.
    let other = request_from(&device, "/sys/lamp/lamp-2/thing/deviceinfo/update", json!({ "id": "1", "params": [] }));
    let refused = client.device_request(other).await.unwrap_err();
    assert!(matches!(refused, ServiceError::PermissionDenied(_)), "{refused:?}");
}

/// A thing service that fails every call with one error.
struct Failing(ServiceError);

#[async_trait]
impl ThingService for Failing {
    async fn put_thing_model(&self, _: &ProductKey, _: Tsl) -> Result<(), ServiceError> {
        Err(self.0.clone())
    }

    async fn get_thing_model(&self, _: &ProductKey) -> Result<Option<Tsl>, ServiceError> {
        Err(self.0.clone())
    }

    async fn latest_properties(&self, _: &DeviceKey) -> Result<PropertySnapshot, ServiceError> {
        Err(self.0.clone())
    }

    async fn tags(&self, _: &DeviceKey) -> Result<Vec<Tag>, ServiceError> {
        Err(self.0.clone())
    }

    async fn desired_properties(&self, _: &DeviceKey) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        Err(self.0.clone())
    }

    async fn set_desired_properties(
        &self,
        _: &DeviceKey,
        _: Map<String, Value>,
    ) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        Err(self.0.clone())
    }

    async fn get_shadow(&self, _: &DeviceKey) -> Result<Option<Value>, ServiceError> {
        Err(self.0.clone())
    }

    async fn update_shadow(&self, _: &DeviceKey, _: Map<String, Value>, _: i64) -> Result<Value, ServiceError> {
        Err(self.0.clone())
    }

    async fn device_request(&self, _: DeviceRequest) -> Result<Option<DeviceMessage>, ServiceError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn every_error_kind_crosses_the_wire_intact() {
    let device = lamp_device();
    let lamp = ProductKey::new("lamp").unwrap();
    let errors = [
        ServiceError::not_found("thing model of lamp"),
        ServiceError::AlreadyExists { what: "x".into() },
        ServiceError::invalid("properties[0].identifier", "missing"),
        ServiceError::PermissionDenied("not yours".into()),
        ServiceError::Conflict { what: "thing/shadow/lamp/lamp-1".into() },
        ServiceError::TooManyRequests("slow down".into()),
        ServiceError::Unavailable("store down".into()),
        ServiceError::Internal("bug".into()),
    ];
    for error in errors {
        let client = ThingGrpcClient::new(&serve_grpc(Arc::new(Failing(error.clone()))).await).unwrap();
        let expected = Err::<(), _>(error.clone());
        assert_eq!(client.put_thing_model(&lamp, lamp_model()).await, expected);
        assert_eq!(client.get_thing_model(&lamp).await.map(drop), expected);
        assert_eq!(client.latest_properties(&device).await.map(drop), expected);
        assert_eq!(client.tags(&device).await.map(drop), expected);
        assert_eq!(client.desired_properties(&device).await.map(drop), expected);
        assert_eq!(client.set_desired_properties(&device, object(json!({ "a": 1 }))).await.map(drop), expected);
        assert_eq!(client.get_shadow(&device).await.map(drop), expected);
        assert_eq!(client.update_shadow(&device, Map::new(), 1).await.map(drop), expected);
        let request = request_from(&device, "/sys/lamp/lamp-1/thing/deviceinfo/update", json!({}));
        assert_eq!(client.device_request(request).await.map(drop), expected);
    }
}

#[tokio::test]
async fn unreadable_json_and_bad_keys_from_the_wire_are_invalid_arguments() {
    let served = serve().await;
    let mut raw = ThingClient::connect(served.url.clone()).await.unwrap();
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        match ServiceError::from_status(&status) {
            ServiceError::Invalid { field, reason } => (field, reason),
            other => panic!("not an invalid argument: {other:?}"),
        }
    };
    let put = |tsl_json: &str| pb::PutThingModelRequest { product_key: "lamp".into(), tsl_json: tsl_json.into() };

    let (field, _) = refused(raw.put_thing_model(put("{not json")).await.unwrap_err());
    assert_eq!(field, "tsl");
    let no_identifier = json!({ "properties": [{ "name": "t", "accessMode": "r", "dataType": { "type": "int" } }] });
    let (field, reason) = refused(raw.put_thing_model(put(&no_identifier.to_string())).await.unwrap_err());
    assert!(field.starts_with("properties[0]"), "{field}: {reason}");
    let bad_key = pb::PutThingModelRequest { product_key: "la/mp".into(), tsl_json: "{}".into() };
    assert_eq!(refused(raw.put_thing_model(bad_key).await.unwrap_err()).0, "productKey");
    assert_eq!(served.client.get_thing_model(&ProductKey::new("lamp").unwrap()).await, Ok(None));

    let set = pb::SetDesiredPropertiesRequest {
        product_key: "lamp".into(),
        device_name: "lamp-1".into(),
        items_json: "[1, 2]".into(),
    };
    assert_eq!(refused(raw.set_desired_properties(set).await.unwrap_err()).0, "items");
    let update = pb::UpdateShadowRequest {
        product_key: "lamp".into(),
        device_name: "lamp-1".into(),
        desired_json: "{\"color\":".into(),
        version: 1,
    };
    assert_eq!(refused(raw.update_shadow(update).await.unwrap_err()).0, "desired");
    let tags = pb::TagsRequest { product_key: "lamp".into(), device_name: String::new() };
    assert_eq!(refused(raw.tags(tags).await.unwrap_err()).0, "deviceName");
    let request = pb::DeviceRequestRequest {
        tenant_id: String::new(),
        product_key: "lamp".into(),
        device_name: "lamp-1".into(),
        iot_id: "iot-1".into(),
        topic: "/sys/lamp/lamp-1/thing/deviceinfo/update".into(),
        payload: b"{}".to_vec(),
    };
    assert_eq!(refused(raw.device_request(request).await.unwrap_err()).0, "tenantId");
}
