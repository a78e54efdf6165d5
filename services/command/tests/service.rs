//! The command service on the embedded adapters with a scripted edge (`support`): calls,
//! answers, async command records and the offline queue. The same behaviour with real devices
//! and the real edge: services/tether/tests/commands.rs.

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tether_bus::Bus;
use tether_bus::downlink::{Answer, Downlink};
use tether_bus::subject;
use tether_command::MAX_QUEUED_PER_DEVICE;
use tether_contract::{
    AuthService, CommandService, CommandStatus, Invocation, NewDevice, RrpcCode, SendOptions, ServiceError,
    ThingService, now_ms,
};
use tether_model::{DeviceName, TopicOperation};
use tether_store::{Route, SessionRoutes};
use tokio::time::Instant;

use support::*;

#[tokio::test]
async fn rrpc_to_an_offline_device_answers_offline_at_once() {
    let setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let started = Instant::now();
    let outcome = setup.commands.rrpc(&device, Bytes::from_static(b"ping"), 8000, None).await.unwrap();
    assert_eq!(outcome.rrpc_code, RrpcCode::Offline);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(outcome.message_id.parse::<u64>().is_ok());
    assert_eq!(outcome.payload, None);
}

#[tokio::test]
async fn rrpc_times_out_at_its_deadline_and_a_late_answer_reaches_nobody() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let started = Instant::now();
    let commands = setup.commands.clone();
    let target = device.clone();
    let call = tokio::spawn(async move { commands.rrpc(&target, Bytes::from_static(b"ping"), 1000, None).await });
    let downlink = setup.downlink().await;
    let id = &downlink.correlation.as_ref().unwrap().message_id;
    assert_eq!(downlink.topic, format!("/sys/{}/{}/rrpc/request/{id}", device.product_key, device.device_name));
    assert_eq!(downlink.payload, Bytes::from_static(b"ping"));
    let correlation = downlink.correlation.clone().unwrap();
    assert_eq!(correlation.expect, Answer::Rrpc);
    assert!((correlation.deadline - (now_ms() + 1000)).abs() < 200, "{correlation:?}");

    let outcome = call.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.rrpc_code, RrpcCode::Timeout);
    assert!(elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(1100), "{elapsed:?}");

    // The answer after the deadline is dropped; the next call gets its own answer only.
    answer(&setup.bus, &downlink, "late").await;
    let commands = setup.commands.clone();
    let target = device.clone();
    let call = tokio::spawn(async move { commands.rrpc(&target, Bytes::from_static(b"again"), 2000, None).await });
    let second = setup.downlink().await;
    answer(&setup.bus, &downlink, "late again").await;
    answer(&setup.bus, &second, "pong").await;
    let outcome = call.await.unwrap().unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"pong"))));
}

#[tokio::test]
async fn concurrent_rrpcs_to_many_devices_each_get_their_own_answer() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let mut devices = Vec::new();
    for _ in 0..50 {
        let device = setup.device(&product).await;
        setup.connect(&device).await;
        devices.push(device);
    }
    // The edge answers each request after a random delay, so answers come back out of order.
    let bus = setup.bus.clone();
    let mut edge = std::mem::replace(&mut setup.edge, bus.subscribe("nobody.listens").await.unwrap());
    let responder = tokio::spawn(async move {
        while let Some(message) = edge.next().await {
            let downlink = Downlink::from_message(message).unwrap();
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 50)).await;
                let mut body = downlink.device.device_name.to_string().into_bytes();
                body.extend_from_slice(b":");
                body.extend_from_slice(&downlink.payload);
                answer(&bus, &downlink, body).await;
            });
        }
    });
    let calls = (0..200).map(|i| {
        let commands = setup.commands.clone();
        let device = devices[i % devices.len()].clone();
        tokio::spawn(async move {
            let request = format!("request-{i}");
            let outcome = commands.rrpc(&device, Bytes::from(request.clone()), 5000, None).await.unwrap();
            assert_eq!(outcome.rrpc_code, RrpcCode::Success, "call {i}");
            let expected = format!("{}:{request}", device.device_name);
            assert_eq!(outcome.payload, Some(Bytes::from(expected)), "call {i}");
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap();
    }
    responder.abort();
}

#[tokio::test]
async fn rrpc_checks_its_timeout_payload_and_topic_and_uses_custom_topics() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let rrpc = |timeout, topic: Option<&str>| {
        let commands = setup.commands.clone();
        let device = device.clone();
        let topic = topic.map(str::to_owned);
        async move { commands.rrpc(&device, Bytes::from_static(b"x"), timeout, topic).await }
    };
    assert_eq!(invalid_field(rrpc(999, None).await.unwrap_err()), "timeoutMs");
    assert_eq!(invalid_field(rrpc(8001, None).await.unwrap_err()), "timeoutMs");
    assert_eq!(invalid_field(rrpc(1000, Some("/other/dn/user/get")).await.unwrap_err()), "topic");
    let big = Bytes::from(vec![0u8; tether_command::MAX_PAYLOAD_BYTES + 1]);
    let error = setup.commands.rrpc(&device, big, 1000, None).await.unwrap_err();
    assert_eq!(invalid_field(error), "payloadBase64");

    setup.connect(&device).await;
    let call = tokio::spawn(rrpc(2000, Some("get")));
    let downlink = setup.downlink().await;
    let id = &downlink.correlation.as_ref().unwrap().message_id;
    assert_eq!(downlink.topic, format!("/ext/rrpc/{id}/{}/{}/user/get", device.product_key, device.device_name));
    answer(&setup.bus, &downlink, "custom").await;
    assert_eq!(call.await.unwrap().unwrap().payload, Some(Bytes::from_static(b"custom")));
}

#[tokio::test]
async fn a_property_set_is_checked_sent_and_followed_to_its_reply() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    setup.connect(&device).await;

    for (bad, field) in [(json!({"Temp": 1}), "items.Temp"), (json!({"Mode": 5}), "items.Mode"), (json!({}), "items")] {
        let error = setup.commands.set_properties(&device, items(bad), SendOptions::default()).await.unwrap_err();
        assert_eq!(invalid_field(error), field);
    }

    let command =
        setup.commands.set_properties(&device, items(json!({"Mode": 1})), SendOptions::default()).await.unwrap();
    assert_eq!(command.status, CommandStatus::Sent);
    assert_eq!(command.method, "thing.service.property.set");
    let downlink = setup.downlink().await;
    assert_eq!(
        downlink.topic,
        format!("/sys/{}/{}/thing/service/property/set", device.product_key, device.device_name)
    );
    assert_eq!(downlink.qos, 1);
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(
        payload,
        json!({"id": command.message_id, "version": "1.0", "params": {"Mode": 1}, "method": "thing.service.property.set"})
    );
    let correlation = downlink.correlation.clone().unwrap();
    assert_eq!((correlation.expect, correlation.reply_to), (Answer::Alink, None));

    setup.report(&downlink, None).await;
    setup.status(&command.message_id, CommandStatus::Delivered).await;
    setup.report(&downlink, Some(200)).await;
    let done = setup.status(&command.message_id, CommandStatus::Succeeded).await;
    assert_eq!((done.reply_code, done.reply_data), (Some(200), Some(json!({"echo": 200}))));
    assert_eq!(done.reply_message.as_deref(), Some("success"));
    assert!(done.updated_at >= done.created_at);
}

#[tokio::test]
async fn a_reply_overtaking_its_delivered_event_is_not_undone() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let command =
        setup.commands.set_properties(&device, items(json!({"Any": 1})), SendOptions::default()).await.unwrap();
    let downlink = setup.downlink().await;
    setup.report(&downlink, Some(460)).await;
    setup.report(&downlink, None).await;
    // Something after both, to know they were handled.
    let second =
        setup.commands.set_properties(&device, items(json!({"Any": 2})), SendOptions::default()).await.unwrap();
    let second_downlink = setup.downlink().await;
    setup.report(&second_downlink, None).await;
    setup.status(&second.message_id, CommandStatus::Delivered).await;
    let failed = setup.status(&command.message_id, CommandStatus::Failed).await;
    assert_eq!(failed.reply_code, Some(460));
}

#[tokio::test]
async fn services_are_invoked_async_or_sync_as_the_thing_model_says() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    setup.connect(&device).await;
    let commands = setup.commands.clone();

    let error = commands.invoke_service(&device, "Nope", json!({}), None, SendOptions::default()).await.unwrap_err();
    assert_eq!(invalid_field(error), "identifier");
    let error = commands.invoke_service(&device, "Blink", json!({"times": 99}), None, SendOptions::default()).await;
    assert_eq!(invalid_field(error.unwrap_err()), "args.times");
    let error = commands.invoke_service(&device, "Probe", json!({}), Some(50), SendOptions::default()).await;
    assert_eq!(invalid_field(error.unwrap_err()), "timeoutMs");

    let Invocation::Async(command) =
        commands.invoke_service(&device, "Blink", json!({"times": 3}), None, SendOptions::default()).await.unwrap()
    else {
        panic!("Blink is async");
    };
    let downlink = setup.downlink().await;
    assert_eq!(downlink.topic, format!("/sys/{}/{}/thing/service/Blink", device.product_key, device.device_name));
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(payload["method"], "thing.service.Blink");
    assert_eq!(payload["params"], json!({"times": 3}));
    assert_eq!(command.method, "thing.service.Blink");

    let call = tokio::spawn(async move {
        let target = device.clone();
        commands.invoke_service(&target, "Probe", Value::Null, Some(3000), SendOptions::default()).await
    });
    let downlink = setup.downlink().await;
    let id = downlink.correlation.as_ref().unwrap().message_id.clone();
    assert!(downlink.topic.ends_with(&format!("/rrpc/request/{id}")), "{}", downlink.topic);
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(payload, json!({"id": id, "version": "1.0", "params": {}, "method": "thing.service.Probe"}));
    let reply = json!({"id": id, "code": 200, "data": {"ok": 1}, "message": "success"});
    answer(&setup.bus, &downlink, reply.to_string()).await;
    let Invocation::Sync { message_id, rrpc_code, code, data } = call.await.unwrap().unwrap() else {
        panic!("Probe is sync");
    };
    assert_eq!((message_id, rrpc_code, code, data), (id, RrpcCode::Success, Some(200), Some(json!({"ok": 1}))));
}

#[tokio::test]
async fn without_a_thing_model_any_service_is_invoked_async() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let invocation = setup.commands.invoke_service(&device, "Anything", json!({"a": 1}), None, SendOptions::default());
    assert!(matches!(invocation.await.unwrap(), Invocation::Async(_)));
    assert!(setup.downlink().await.topic.ends_with("/thing/service/Anything"));
}

#[tokio::test]
async fn an_offline_device_needs_a_ttl_and_gets_its_queue_in_order_when_it_connects() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let error = setup.commands.set_properties(&device, items(json!({"A": 0})), SendOptions::default()).await;
    assert!(matches!(error, Err(ServiceError::DeviceOffline { .. })), "{error:?}");

    let mut queued = Vec::new();
    for i in 0..5 {
        let command = setup.commands.set_properties(&device, items(json!({"A": i})), ttl(60_000)).await.unwrap();
        assert_eq!(command.status, CommandStatus::Queued);
        assert!(command.expires_at.unwrap() > now_ms() + 50_000);
        queued.push(command.message_id);
    }
    setup.no_downlink(Duration::from_millis(100)).await;
    let listed: Vec<String> =
        setup.commands.list_commands(&device).await.unwrap().into_iter().map(|c| c.message_id).collect();
    assert_eq!(listed, queued);

    setup.connect(&device).await;
    for (i, message_id) in queued.iter().enumerate() {
        let downlink = setup.downlink().await;
        assert_eq!(&downlink.correlation.as_ref().unwrap().message_id, message_id);
        let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
        assert_eq!(payload["params"], json!({"A": i}));
    }
    for message_id in &queued {
        setup.status(message_id, CommandStatus::Sent).await;
    }
    // Sent once: a second online event finds the queue empty.
    setup.connect(&device).await;
    setup.no_downlink(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_queue_is_bounded_and_expired_commands_are_never_sent() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let device = setup.device(&product).await;
    for i in 0..MAX_QUEUED_PER_DEVICE {
        setup.commands.set_properties(&device, items(json!({"A": i})), ttl(60_000)).await.unwrap();
    }
    let error = setup.commands.set_properties(&device, items(json!({"A": -1})), ttl(60_000)).await;
    assert!(matches!(error, Err(ServiceError::TooManyRequests(_))), "{error:?}");
    let error = setup.commands.set_properties(&device, items(json!({"A": 0})), ttl(0)).await;
    assert_eq!(invalid_field(error.unwrap_err()), "ttlMs");

    // The sweeper expires what outlives its TTL; it is never sent.
    let other = setup.device(&product).await;
    let short = setup.commands.set_properties(&other, items(json!({"B": 0})), ttl(100)).await.unwrap();
    setup.status(&short.message_id, CommandStatus::Expired).await;
    setup.connect(&other).await;

    setup.connect(&device).await;
    let mut sent = Vec::new();
    for _ in 0..MAX_QUEUED_PER_DEVICE {
        let downlink = setup.downlink().await;
        assert_eq!(downlink.device, device);
        let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
        sent.push(payload["params"]["A"].as_u64().unwrap());
    }
    assert_eq!(sent, (0..MAX_QUEUED_PER_DEVICE as u64).collect::<Vec<u64>>());
    setup.no_downlink(Duration::from_millis(100)).await;
    assert_eq!(setup.commands.get_command(&short.message_id).await.unwrap().status, CommandStatus::Expired);
}

#[tokio::test]
async fn a_queued_command_survives_a_restart() {
    let setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let first = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    let second = setup.commands.invoke_service(&device, "Reset", json!({}), None, ttl(60_000)).await.unwrap();
    let Invocation::Async(second) = second else { panic!("async without a model") };

    let mut setup = setup.restart().await;
    assert_eq!(setup.commands.get_command(&first.message_id).await.unwrap().status, CommandStatus::Queued);
    setup.connect(&device).await;
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, first.message_id);
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, second.message_id);
    setup.status(&second.message_id, CommandStatus::Sent).await;
}

#[tokio::test]
async fn a_command_sent_to_an_online_device_waits_for_those_queued_before_it() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let queued = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    // Online, but its status event not handled yet: the route is there first.
    let route = Route { node: NODE.into(), conn_id: 1, connected_at: now_ms(), client_ip: String::new() };
    setup.routes.connect(&device, route).await.unwrap();
    let direct = setup.commands.set_properties(&device, items(json!({"A": 2})), SendOptions::default()).await.unwrap();
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, queued.message_id);
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, direct.message_id);
    setup.disconnect(&device).await;
}

#[tokio::test]
async fn pub_needs_a_sub_topic_class_and_is_best_effort_for_offline_devices() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[("cmd", TopicOperation::Sub), ("both", TopicOperation::All)]).await;
    let device = setup.device(&product).await;
    let topic = |short: &str| format!("/{}/{}/user/{short}", device.product_key, device.device_name);
    let commands = setup.commands.clone();
    let publish = |topic: String, qos| {
        let commands = commands.clone();
        let product = product.clone();
        async move { commands.publish(&product, &topic, Bytes::from_static(b"hi"), qos).await }
    };
    // `update` is a default PUB class: devices publish there, they are never sent to.
    assert_eq!(invalid_field(publish(topic("update"), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish(topic("unknown"), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish("/sys/x/y/thing".into(), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish(topic("cmd"), 2).await.unwrap_err()), "qos");
    let ghost = format!("/{}/ghost/user/cmd", device.product_key);
    assert!(matches!(publish(ghost, 0).await, Err(ServiceError::NotFound { .. })));

    let offline_id = publish(topic("cmd"), 1).await.unwrap();
    assert!(offline_id.parse::<u64>().is_ok());
    setup.no_downlink(Duration::from_millis(50)).await;

    setup.connect(&device).await;
    publish(topic("both"), 1).await.unwrap();
    let downlink = setup.downlink().await;
    assert_eq!((downlink.topic.as_str(), downlink.qos, downlink.correlation), (topic("both").as_str(), 1, None));
    assert_eq!(downlink.payload, Bytes::from_static(b"hi"));
}

#[tokio::test]
async fn a_broadcast_goes_to_every_edge_with_its_product_and_topic() {
    let setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let mut edges = setup.bus.subscribe(subject::EDGE_BROADCAST).await.unwrap();
    let id = setup.commands.broadcast(&product, Bytes::from_static(b"all"), None).await.unwrap();
    let message = edges.next().await.unwrap();
    assert_eq!(message.headers.get("productKey").map(String::as_str), Some(product.as_str()));
    assert_eq!(message.headers.get("messageId"), Some(&id));
    assert_eq!(message.headers.get("topic"), None);
    assert_eq!(message.payload, Bytes::from_static(b"all"));

    let topic = format!("/broadcast/{product}/news");
    let id = setup.commands.broadcast(&product, Bytes::from_static(b"n"), Some(topic.clone())).await.unwrap();
    let message = edges.next().await.unwrap();
    assert_eq!((message.headers.get("messageId"), message.headers.get("topic")), (Some(&id), Some(&topic)));
    // Pub to a broadcast topic is a broadcast, as in Aliyun.
    setup.commands.publish(&product, &topic, Bytes::from_static(b"p"), 0).await.unwrap();
    assert_eq!(edges.next().await.unwrap().payload, Bytes::from_static(b"p"));

    let error = setup.commands.broadcast(&product, Bytes::from_static(b"x"), Some("/broadcast/other/x".into())).await;
    assert_eq!(invalid_field(error.unwrap_err()), "topicFullName");
    let big = Bytes::from(vec![0u8; tether_command::MAX_BROADCAST_BYTES + 1]);
    assert_eq!(invalid_field(setup.commands.broadcast(&product, big, None).await.unwrap_err()), "payloadBase64");
}

#[tokio::test]
async fn a_deleted_device_takes_its_commands_with_it() {
    let setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let device = setup.device(&product).await;
    let command = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    setup.auth.delete_device(&setup.tenant, &device).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while setup.commands.get_command(&command.message_id).await.is_ok() {
        assert!(Instant::now() < deadline, "command of a deleted device still there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Registered again under the same name, the device starts with no commands.
    let again = setup
        .auth
        .register_device(
            &setup.tenant,
            &product,
            NewDevice { device_name: Some(DeviceName::new(device.device_name.as_str()).unwrap()), device_secret: None },
        )
        .await
        .unwrap();
    assert_eq!(again.device_name, device.device_name);
    assert!(setup.commands.list_commands(&device).await.unwrap().is_empty());
    assert!(matches!(setup.commands.get_command("123").await, Err(ServiceError::NotFound { .. })));
}
