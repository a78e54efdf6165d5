//! Device PUBLISH: property posts and their replies, malformed input, size limit, ACL, and the
//! envelope that reaches the bus.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use serde_json::{Map, Value, json};
use tether_tests::{Device, DeviceV5, TestPlatform, V5Ack};

const POST: &str = "thing/event/property/post";

#[tokio::test]
async fn property_post_gets_a_complete_reply_and_reaches_the_bus() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut uplinks = platform.bus().consume("test", "tether.up.*.*.*.property").await.unwrap();
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    // Even a device subscribed to all its own topics never gets its own publish back.
    let own = creds.topic("#");
    assert_eq!(device.subscribe(&[&own]).await, [true]);

    let post = json!({"id": "123", "version": "1.0", "params": {"Power": "on", "Temp": {"value": 21.5, "time": 1700000000000_i64}}, "method": "thing.event.property.post"});
    let reply = device.request(&creds, POST, post.to_string().as_bytes()).await;
    assert_eq!(reply["id"], "123");
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["data"], json!({}));
    assert_eq!(reply["message"], "success");
    assert!(device.next_message_within(Duration::from_millis(300)).await.is_none(), "echo or duplicate reply");

    let delivery = tokio::time::timeout(Duration::from_secs(5), uplinks.next()).await.unwrap().unwrap();
    let event: Value = serde_json::from_slice(&delivery.message.payload).unwrap();
    assert_eq!(event["productKey"], creds.product_key.as_str());
    assert_eq!(event["deviceName"], creds.device_name.as_str());
    assert_eq!(event["requestId"], "123");
    assert_eq!(event["items"]["Power"]["value"], "on");
    assert_eq!(event["items"]["Temp"], json!({"value": 21.5, "time": 1700000000000_i64}));
    assert_eq!(
        delivery.message.headers["topic"],
        format!("/{}/{}/thing/event/property/post", creds.product_key, creds.device_name)
    );
    delivery.ack().await.unwrap();
    platform.stop().await;
}

#[tokio::test]
async fn js_sdk_request_ids_are_echoed_byte_for_byte() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let id = format!("1|exp-topic|{}", creds.topic("thing/event/property/post_reply"));
    let post = json!({"id": id, "params": {"a": 1}, "method": "thing.event.property.post"});
    let reply = device.request(&creds, POST, post.to_string().as_bytes()).await;
    assert_eq!(reply["id"], id.as_str());
    assert_eq!(reply["code"], 200);
    platform.stop().await;
}

#[tokio::test]
async fn malformed_posts_get_alink_errors_and_the_device_stays_usable() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let reply = device.request(&creds, POST, b"{not json").await;
    assert_eq!(reply["code"], 400);
    for key in ["id", "code", "data", "message"] {
        assert!(reply.get(key).is_some(), "reply lacks {key}: {reply}");
    }

    let reply = device.request(&creds, POST, br#"{"id":"2","params":[1,2]}"#).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("2"), Some(460)));
    let reply = device.request(&creds, POST, br#"{"id":"3"}"#).await;
    assert_eq!(reply["code"], 460);

    let many: Map<String, Value> = (0..201).map(|i| (format!("p{i}"), json!(i))).collect();
    let post = json!({"id": "4", "params": many});
    let reply = device.request(&creds, POST, post.to_string().as_bytes()).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("4"), Some(6106)));

    let huge = format!(r#"{{"id":"5","params":{{"blob":"{}"}}}}"#, "x".repeat(300 * 1024));
    let reply = device.request(&creds, POST, huge.as_bytes()).await;
    assert_eq!(reply["code"], 400);
    assert!(reply["message"].as_str().unwrap().contains("limit"), "{reply}");

    let reply = device.request(&creds, POST, br#"{"id":"6","params":{"ok":true}}"#).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("6"), Some(200)));
    platform.stop().await;
}

#[tokio::test]
async fn acl_limits_subscribe_and_publish_to_the_devices_own_topics() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let other = platform.register_device(&creds.product_key).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let mut victim = Device::connect(platform.mqtt_addr(), &other).await;

    let (pk, dn) = (&creds.product_key, &creds.device_name);
    let granted = device
        .subscribe(&[
            &format!("/{pk}/{dn}/user/get"),
            &format!("/sys/{pk}/{dn}/rrpc/request/+"),
            &format!("/broadcast/{pk}/+"),
            &format!("/sys/{pk}/{}/#", other.device_name),
            &format!("/{pk}/{dn}/user/update"),
            "#",
        ])
        .await;
    assert_eq!(granted, [true, true, true, false, false, false]);

    // Publishing on another device's topic is dropped: no reply to anyone.
    let post = br#"{"id":"1","params":{"Power":1}}"#.to_vec();
    device.publish(&other.topic(POST), post).await;
    device.publish(&format!("/{pk}/{dn}/user/get"), b"sub-only class".to_vec()).await;
    assert!(victim.next_message_within(Duration::from_millis(300)).await.is_none());
    // A topic outside the Alink grammar is answered on the device's error topic.
    device.publish("/not/an/alink/topic", b"x".to_vec()).await;
    let error = device.next_message().await;
    assert_eq!(error.topic, format!("/ext/error/{pk}/{dn}"));
    assert_eq!(error.json()["code"], 6203);
    // The offender is still connected and served.
    let reply = device.request(&creds, POST, br#"{"id":"2","params":{"Power":1}}"#).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("2"), Some(200)));
    platform.stop().await;
}

#[tokio::test]
async fn mqtt5_devices_get_precise_reason_codes() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let other = platform.register_device(&creds.product_key).await;
    let addr = platform.mqtt_addr();

    // rumqttc closes its side after a negative ack, so each refusal gets a fresh connection.
    let mut device = DeviceV5::connect_with(addr, &creds, None).await.unwrap();
    device.publish(&other.topic(POST), br#"{"id":"1","params":{}}"#.to_vec()).await;
    assert_eq!(device.next_ack().await, V5Ack::PubAck(PubAckReason::NotAuthorized));

    let mut device = DeviceV5::connect_with(addr, &creds, None).await.unwrap();
    device.publish("/not/an/alink/topic", b"x".to_vec()).await;
    assert_eq!(device.next_ack().await, V5Ack::PubAck(PubAckReason::TopicNameInvalid));

    let mut device = DeviceV5::connect_with(addr, &creds, None).await.unwrap();
    let foreign = format!("/sys/{}/{}/#", other.product_key, other.device_name);
    device.client.subscribe(foreign, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.unwrap();
    assert_eq!(device.next_ack().await, V5Ack::SubAck(vec![SubscribeReasonCode::NotAuthorized]));

    let mut device = DeviceV5::connect_with(addr, &creds, None).await.unwrap();
    device.publish(&creds.topic(POST), br#"{"id":"7","params":{"x":1}}"#.to_vec()).await;
    let reply = device.next_message().await.json();
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("7"), Some(200)));
    platform.stop().await;
}

#[tokio::test]
async fn ntp_request_is_answered_with_server_times() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let (pk, dn) = (&creds.product_key, &creds.device_name);
    device.publish(&format!("/ext/ntp/{pk}/{dn}/request"), br#"{"deviceSendTime":"1571724098000"}"#.to_vec()).await;
    let response = device.next_message().await;
    assert_eq!(response.topic, format!("/ext/ntp/{pk}/{dn}/response"));
    let body = response.json();
    assert_eq!(body["deviceSendTime"], "1571724098000");
    let recv: i64 = body["serverRecvTime"].as_str().unwrap().parse().unwrap();
    let send: i64 = body["serverSendTime"].as_str().unwrap().parse().unwrap();
    assert!(recv > 1_700_000_000_000 && send >= recv, "{body}");
    platform.stop().await;
}

/// A device that pipelines QoS 1 posts whose frames arrive split across TCP reads (a slow link,
/// a busy device) gets every PUBACK. ntex-mqtt 8.2 hands such a PUBLISH over as a streamed payload
/// and could dispatch its first chunk before the PUBLISH itself, leaving the connection waiting
/// forever (vendor/README.md).
#[tokio::test]
async fn pipelined_posts_split_across_tcp_reads_all_get_pubacks() {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{self, Connect, Login, Packet, Publish};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const POSTS: u16 = 400;
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let (client_id, username, password) = creds.login(tether_model::SignMethod::HmacSha1);
    let stream = tokio::net::TcpStream::connect(platform.mqtt_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();

    let mut connect = Connect::new(client_id);
    connect.keep_alive = 60;
    connect.login = Some(Login::new(username, password));
    let mut frame = BytesMut::new();
    connect.write(&mut frame).unwrap();
    writer.write_all(&frame).await.unwrap();

    let acks = tokio::spawn(async move {
        let mut buffer = BytesMut::new();
        let mut acked = std::collections::BTreeSet::new();
        while acked.len() < usize::from(POSTS) {
            match v4::read(&mut buffer, 1 << 20) {
                Ok(Packet::PubAck(ack)) => {
                    acked.insert(ack.pkid);
                }
                Ok(Packet::ConnAck(ack)) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
                Ok(_) => {}
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    if reader.read_buf(&mut buffer).await.unwrap() == 0 {
                        break;
                    }
                }
                Err(error) => panic!("bad frame from the edge: {error:?}"),
            }
        }
        acked
    });

    let topic = creds.topic(POST);
    for pkid in 1..=POSTS {
        let body = json!({"id": pkid.to_string(), "params": {"Seq": pkid, "Pad": "x".repeat(usize::from(pkid % 97))}});
        let mut publish = Publish::new(&topic, QoS::AtLeastOnce, body.to_string());
        publish.pkid = pkid;
        let mut frame = BytesMut::new();
        publish.write(&mut frame).unwrap();
        // Split inside the payload, at a different place each time, with a pause between the
        // halves now and then so the edge sees the PUBLISH before the rest of its payload.
        let split = frame.len() - 1 - usize::from(pkid) % 20;
        writer.write_all(&frame[..split]).await.unwrap();
        if pkid % 3 == 0 {
            tokio::time::sleep(Duration::from_micros(200 + u64::from(pkid % 7) * 300)).await;
        }
        writer.write_all(&frame[split..]).await.unwrap();
    }

    let acked = tokio::time::timeout(Duration::from_secs(20), acks).await.expect("every post acknowledged").unwrap();
    let missing: Vec<u16> = (1..=POSTS).filter(|pkid| !acked.contains(pkid)).collect();
    assert!(missing.is_empty(), "no PUBACK for packet ids {missing:?}");
    platform.stop().await;
}
