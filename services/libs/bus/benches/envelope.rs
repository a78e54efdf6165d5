//! Micro-benchmarks of the bus envelope the edge builds for each accepted property post: the
//! body in Aliyun's forwarded shape, its subject and headers ([`events::property_post`]); pure
//! code, no bus involved (docs/micro-benchmarks.md).
//!
//! `cargo bench -p tether-bus --bench envelope` runs them under criterion.
//! `envelope-<hash> --fixed <op> <n>` runs one operation exactly `n` times and nothing else, for
//! `load/callgrind.sh`; `--ops` lists the operations.

use std::hint::black_box;

use criterion::Criterion;
use serde_json::{Map, Value, json};
use tether_bus::events::{self, Origin};
use tether_model::{DeviceKey, TenantId};

const RECEIVED_AT: i64 = 1_700_000_000_456;

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
        let Some(op) = operations.iter().find(|op| op.name == name) else {
            eprintln!("unknown operation {name}");
            std::process::exit(2);
        };
        for _ in 0..count {
            (op.run)();
        }
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for op in &operations {
        criterion.bench_function(op.name, |b| b.iter(|| (op.run)()));
    }
    criterion.final_summary();
}

/// The `params` of the model benches' ~150-byte post: 4 plain properties.
fn typical_params() -> Map<String, Value> {
    let params = json!({"PowerSwitch": 1, "Brightness": 80, "ColorTemperature": 4000, "WorkMode": 2});
    params.as_object().cloned().unwrap()
}

/// The `params` of the model benches' ~2 KB post: 44 properties, half with device timestamps.
fn large_params() -> Map<String, Value> {
    (0..44)
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
        .collect()
}

fn operations() -> Vec<Operation> {
    let mut ops = Vec::new();
    for (name, params) in
        [("envelope/property_post_4_props", typical_params()), ("envelope/property_post_44_props", large_params())]
    {
        let tenant = TenantId::new("acme-iot").unwrap();
        let device = DeviceKey::parse("a1B2c3D4e5F", "lamp-0042").unwrap();
        let run = move || {
            let origin = Origin { tenant: &tenant, device: &device, iot_id: "Q7uOhVRdlRRRnfMmsFpk000100" };
            black_box(events::property_post(
                black_box(origin),
                black_box("1700000000123"),
                black_box(&params),
                RECEIVED_AT,
            ));
        };
        ops.push(Operation { name, run: Box::new(run) });
    }
    ops
}
