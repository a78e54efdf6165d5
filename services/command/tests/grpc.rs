//! The command service over a real gRPC socket: the cluster-mode client gets exactly what the
//! service says (records, sync answers, RRPC outcomes, message ids, and errors with their kind
//! and field), and JSON the server cannot read is refused as an invalid argument.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tether_bus::Bus;
use tether_bus::subject;
use tether_contract::{
    CommandGrpcClient, CommandGrpcServer, CommandService, CommandStatus, Invocation, RrpcCode, SendOptions,
    ServiceError, ThingService,
};
use tether_model::TopicOperation;
use tether_proto::v1 as pb;
use tether_proto::v1::command_client::CommandClient;

use support::*;

/// Serves `service` as `tether.v1.Command` on a free port; returns its URL.
async fn serve_grpc(service: Arc<dyn CommandService>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CommandGrpcServer::new(service).into_service())
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn records_and_answers_cross_grpc_intact() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[("cmd", TopicOperation::Sub)]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    let url = serve_grpc(setup.commands.clone()).await;
    let client = CommandGrpcClient::new(&url).unwrap();

    // A queued command, read back through both.
    let queued = client.set_properties(&device, items(json!({"Mode": 1})), ttl(60_000)).await.unwrap();
    assert_eq!(queued.status, CommandStatus::Queued);
    assert_eq!(setup.commands.get_command(&queued.message_id).await.unwrap(), queued);
    assert_eq!(client.get_command(&queued.message_id).await.unwrap(), queued);
    let Invocation::Async(blink) =
        client.invoke_service(&device, "Blink", json!({"times": 2}), None, ttl(60_000)).await.unwrap()
    else {
        panic!("Blink is async");
    };
    assert_eq!(client.list_commands(&device).await.unwrap(), vec![queued.clone(), blink]);

    // Offline answers, then a device that answers.
    let outcome = client.rrpc(&device, Bytes::from_static(b"x"), 1000, None).await.unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Offline, None));
    setup.connect(&device).await;
    let first = setup.downlink().await;
    assert_eq!(first.correlation.unwrap().message_id, queued.message_id);
    setup.downlink().await;

    let call = {
        let client = client.clone();
        let device = device.clone();
        tokio::spawn(async move { client.invoke_service(&device, "Probe", Value::Null, Some(3000), ttl(1)).await })
    };
    let downlink = setup.downlink().await;
    let id = downlink.correlation.as_ref().unwrap().message_id.clone();
    answer(&setup.bus, &downlink, json!({"id": id, "code": 200, "data": {"ok": 1}, "message": "success"}).to_string())
        .await;
    let expected = Invocation::Sync {
        message_id: id,
        rrpc_code: RrpcCode::Success,
        code: Some(200),
        data: Some(json!({"ok": 1})),
    };
    assert_eq!(call.await.unwrap().unwrap(), expected);

    let call = {
        let client = client.clone();
        let device = device.clone();
        tokio::spawn(
            async move { client.rrpc(&device, Bytes::from_static(b"\x00\xffraw"), 2000, Some("get".into())).await },
        )
    };
    let downlink = setup.downlink().await;
    assert_eq!(downlink.payload, Bytes::from_static(b"\x00\xffraw"));
    answer(&setup.bus, &downlink, Bytes::from_static(b"\x01\x02")).await;
    let outcome = call.await.unwrap().unwrap();
    assert_eq!(outcome.message_id, downlink.correlation.unwrap().message_id);
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"\x01\x02"))));

    // Pub and broadcast answer their message ids.
    let topic = format!("/{}/{}/user/cmd", device.product_key, device.device_name);
    let id = client.publish(&product, &topic, Bytes::from_static(b"hi"), 1).await.unwrap();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(setup.downlink().await.topic, topic);
    let mut edges = setup.bus.subscribe(subject::EDGE_BROADCAST).await.unwrap();
    let id = client.broadcast(&product, Bytes::from_static(b"all"), Some(format!("/broadcast/{product}/x"))).await;
    assert_eq!(edges.next().await.unwrap().headers.get("messageId"), Some(&id.unwrap()));
}

#[tokio::test]
async fn errors_keep_their_kind_and_field() {
    let setup = Setup::start().await;
    let product = setup.product(&[]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    let url = serve_grpc(setup.commands.clone()).await;
    let client = CommandGrpcClient::new(&url).unwrap();

    let error = client.rrpc(&device, Bytes::new(), 50, None).await.unwrap_err();
    assert_eq!(invalid_field(error), "timeoutMs");
    let error = client.set_properties(&device, items(json!({"Temp": 3})), SendOptions::default()).await.unwrap_err();
    assert_eq!(invalid_field(error), "items.Temp");
    let error = client.invoke_service(&device, "Blink", json!({"times": 0}), None, ttl(10)).await.unwrap_err();
    assert_eq!(invalid_field(error), "args.times");
    let error = client.publish(&product, "/nope", Bytes::new(), 0).await.unwrap_err();
    assert_eq!(invalid_field(error), "topicFullName");
    let error = client.set_properties(&device, items(json!({"Mode": 0})), SendOptions::default()).await.unwrap_err();
    assert!(matches!(&error, ServiceError::DeviceOffline { device: d } if *d == device.to_string()), "{error:?}");
    for _ in 0..tether_command::MAX_QUEUED_PER_DEVICE {
        client.set_properties(&device, items(json!({"Mode": 0})), ttl(60_000)).await.unwrap();
    }
    let error = client.set_properties(&device, items(json!({"Mode": 0})), ttl(60_000)).await.unwrap_err();
    assert!(matches!(error, ServiceError::TooManyRequests(_)), "{error:?}");
    assert!(matches!(client.get_command("1").await, Err(ServiceError::NotFound { .. })));

    // What only a raw client can send: JSON that does not parse, ids that are not ids, qos > 255.
    let mut raw = CommandClient::connect(url).await.unwrap();
    let request = pb::SetPropertiesRequest {
        product_key: product.to_string(),
        device_name: device.device_name.to_string(),
        items_json: "[1, 2]".into(),
        ttl_ms: None,
    };
    let status = raw.set_properties(request).await.unwrap_err();
    assert_eq!(invalid_field(ServiceError::from_status(&status)), "items");
    let request = pb::ListCommandsRequest { product_key: "bad/key".into(), device_name: "dn".into() };
    let status = raw.list_commands(request).await.unwrap_err();
    assert_eq!(invalid_field(ServiceError::from_status(&status)), "productKey");
    let request = pb::PublishRequest {
        product_key: product.to_string(),
        topic_full_name: "/x".into(),
        payload: vec![],
        qos: 300,
    };
    let status = raw.publish(request).await.unwrap_err();
    assert_eq!(invalid_field(ServiceError::from_status(&status)), "qos");
}
