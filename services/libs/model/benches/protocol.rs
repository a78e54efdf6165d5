//! Micro-benchmarks of the device-protocol work the edge does per message and per connect: Alink
//! decode and reply encode, topic parsing and the publish/subscribe ACL, the CONNECT sign check
//! and client-id parsing (docs/micro-benchmarks.md).
//!
//! `cargo bench -p tether-model` runs them under criterion. `protocol-<hash> --fixed <op> <n>`
//! runs one operation exactly `n` times and nothing else, so `load/callgrind.sh` can turn
//! callgrind's instruction count into instructions per operation; `--ops` lists the operations.

use std::hint::black_box;

use criterion::Criterion;
use serde_json::{Map, Value, json};
use tether_model::topic::{self, TopicClass};
use tether_model::{AlinkReply, AlinkRequest, DeviceKey, MqttClientId, SignMethod, SignParams, SubscribeFilter, Topic};

const PRODUCT_KEY: &str = "a1B2c3D4e5F";
const DEVICE_NAME: &str = "lamp-0042";
const DEVICE_SECRET: &str = "Wm3fQ9xKp2LsT7vB8nYc4HdR6jAeZ1uG";

/// One benchmarked operation: its name (criterion's benchmark id) and a closure doing it once.
struct Operation {
    name: &'static str,
    run: Box<dyn Fn()>,
}

fn main() {
    let operations = operations();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--ops") {
        operations.iter().for_each(|op| println!("{}", op.name));
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--fixed") {
        let (Some(name), Some(count)) = (args.get(at + 1), args.get(at + 2).and_then(|n| n.parse::<u64>().ok())) else {
            eprintln!("usage: --fixed <operation> <iterations>");
            std::process::exit(2);
        };
        run_fixed(&operations, name, count);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for op in &operations {
        criterion.bench_function(op.name, |b| b.iter(|| (op.run)()));
    }
    criterion.final_summary();
}

/// Runs `name` exactly `count` times (no timing, no statistics), for callgrind.
fn run_fixed(operations: &[Operation], name: &str, count: u64) {
    let Some(op) = operations.iter().find(|op| op.name == name) else {
        eprintln!("unknown operation {name}; known: {}", names(operations));
        std::process::exit(2);
    };
    for _ in 0..count {
        (op.run)();
    }
}

fn names(operations: &[Operation]) -> String {
    operations.iter().map(|op| op.name).collect::<Vec<_>>().join(", ")
}

fn operations() -> Vec<Operation> {
    let mut ops = Vec::new();
    alink_operations(&mut ops);
    topic_operations(&mut ops);
    connect_operations(&mut ops);
    ops
}

fn op(ops: &mut Vec<Operation>, name: &'static str, run: impl Fn() + 'static) {
    ops.push(Operation { name, run: Box::new(run) });
}

/// A property post as the Aliyun Python SDK sends it: 4 plain properties, ~150 bytes.
fn typical_post() -> Vec<u8> {
    let payload = json!({
        "id": "1700000000123",
        "version": "1.0",
        "params": {"PowerSwitch": 1, "Brightness": 80, "ColorTemperature": 4000, "WorkMode": 2},
        "method": "thing.event.property.post",
    });
    let bytes = payload.to_string().into_bytes();
    assert!((140..=170).contains(&bytes.len()), "typical post is {} bytes", bytes.len());
    bytes
}

/// A larger post: 44 properties of mixed types, half with device timestamps, ~2 KB.
fn large_post() -> Vec<u8> {
    let params: Map<String, Value> = (0..44)
        .map(|i| {
            let value = match i % 4 {
                0 => json!(20.5 + f64::from(i)),
                1 => json!(i * 1000),
                2 => json!(format!("mode-{i}")),
                _ => json!({"x": i, "y": -i, "label": "sensor"}),
            };
            let value =
                if i % 2 == 0 { json!({"value": value, "time": 1_700_000_000_000_i64 + i64::from(i)}) } else { value };
            (format!("Property{i:02}"), value)
        })
        .collect();
    let payload = json!({
        "id": "1700000000124",
        "version": "1.0",
        "sys": {"ack": 1},
        "params": params,
        "method": "thing.event.property.post",
    });
    let bytes = payload.to_string().into_bytes();
    assert!((1900..=2200).contains(&bytes.len()), "large post is {} bytes", bytes.len());
    bytes
}

fn alink_operations(ops: &mut Vec<Operation>) {
    let typical = typical_post();
    op(ops, "alink/decode_post_150B", move || {
        black_box(AlinkRequest::decode(black_box(&typical)).unwrap());
    });
    let large = large_post();
    op(ops, "alink/decode_post_2KB", move || {
        black_box(AlinkRequest::decode(black_box(&large)).unwrap());
    });
    // As the edge answers a property post: id echoed, empty data, method from the topic.
    op(ops, "alink/reply_encode", || {
        let reply = AlinkReply::success(black_box("1700000000123"), json!({}))
            .with_method(Some("thing.event.property.post".to_owned()));
        black_box(reply.encode());
    });
}

fn device() -> DeviceKey {
    DeviceKey::parse(PRODUCT_KEY, DEVICE_NAME).unwrap()
}

fn topic_operations(ops: &mut Vec<Operation>) {
    let sys = format!("/sys/{PRODUCT_KEY}/{DEVICE_NAME}/thing/event/property/post");
    let custom = format!("/{PRODUCT_KEY}/{DEVICE_NAME}/user/update");
    let sys_topic = Topic::parse(&sys).unwrap();
    let custom_topic = Topic::parse(&custom).unwrap();
    op(ops, "topic/parse_sys_property_post", move || {
        black_box(Topic::parse(black_box(&sys)).unwrap());
    });
    op(ops, "topic/parse_custom", move || {
        black_box(Topic::parse(black_box(&custom)).unwrap());
    });
    let (dev, classes) = (device(), TopicClass::defaults());
    assert!(topic::may_publish(&dev, &classes, &sys_topic));
    op(ops, "topic/may_publish_sys", move || {
        black_box(topic::may_publish(black_box(&dev), black_box(&classes), black_box(&sys_topic)));
    });
    let (dev, classes) = (device(), TopicClass::defaults());
    assert!(topic::may_publish(&dev, &classes, &custom_topic));
    op(ops, "topic/may_publish_custom", move || {
        black_box(topic::may_publish(black_box(&dev), black_box(&classes), black_box(&custom_topic)));
    });
    // What the SDKs subscribe to after CONNECT: a system downlink and a custom SUB class.
    for (name, filter) in [
        ("topic/subscribe_parse_acl_sys", format!("/sys/{PRODUCT_KEY}/{DEVICE_NAME}/thing/service/property/set")),
        ("topic/subscribe_parse_acl_custom", format!("/{PRODUCT_KEY}/{DEVICE_NAME}/user/get")),
    ] {
        let (dev, classes) = (device(), TopicClass::defaults());
        assert!(topic::may_subscribe(&dev, &classes, &SubscribeFilter::parse(&filter).unwrap()));
        op(ops, name, move || {
            let parsed = SubscribeFilter::parse(black_box(&filter)).unwrap();
            black_box(topic::may_subscribe(black_box(&dev), black_box(&classes), &parsed));
        });
    }
}

fn connect_operations(ops: &mut Vec<Operation>) {
    let client_id = format!("{PRODUCT_KEY}.{DEVICE_NAME}");
    for (name, method) in [
        ("sign/verify_hmacsha1", SignMethod::HmacSha1),
        ("sign/verify_hmacsha256", SignMethod::HmacSha256),
        ("sign/verify_hmacmd5", SignMethod::HmacMd5),
    ] {
        let client_id = client_id.clone();
        let params = SignParams {
            client_id: &client_id,
            device_name: DEVICE_NAME,
            product_key: PRODUCT_KEY,
            timestamp: Some("1700000000123"),
        };
        let password = method.sign(DEVICE_SECRET, &params).into_bytes();
        op(ops, name, move || {
            let params = SignParams {
                client_id: &client_id,
                device_name: DEVICE_NAME,
                product_key: PRODUCT_KEY,
                timestamp: Some("1700000000123"),
            };
            assert!(method.verify(black_box(DEVICE_SECRET), black_box(&params), black_box(&password)));
        });
    }
    // The C SDK 4.x client id (trailing comma included), as the Python and C SDKs send it.
    let raw =
        format!("{client_id}|timestamp=1700000000123,_ss=1,_v=sdk-c-4.1.0,securemode=3,signmethod=hmacsha256,ext=3,|");
    MqttClientId::parse(&raw).unwrap();
    op(ops, "client_id/parse_c_sdk", move || {
        black_box(MqttClientId::parse(black_box(&raw)).unwrap());
    });
}
