//! A scaled-down run of every scenario (hundreds of devices, seconds), so the generator keeps
//! working: each must finish, write its JSON result, and see no loss. It judges no speed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn tether_load() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether-load"))
}

/// The `tether` binary the workspace build put beside `tether-load`.
fn tether() -> PathBuf {
    let bin = tether_load().with_file_name("tether");
    assert!(bin.exists(), "no tether binary at {} (build the workspace first)", bin.display());
    bin
}

/// Runs `tether-load run <scenario> --smoke` and returns its JSON result.
fn smoke(scenario: &str) -> Value {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(tether_load())
        .args(["run", scenario, "--smoke", "--tether-bin"])
        .arg(tether())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{scenario} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let result = std::fs::read_dir(out.path()).unwrap().next().expect("a JSON result").unwrap().path();
    let record: Value = serde_json::from_slice(&std::fs::read(result).unwrap()).unwrap();
    assert_eq!(record["scenario"], scenario);
    assert_eq!(record["smoke"], true);
    assert!(record["loadAverage"]["before"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(record["commandLine"].as_str().unwrap().contains("--smoke"));
    let summary = record["summary"].as_array().unwrap();
    assert!(summary.iter().all(|line| stdout.contains(line.as_str().unwrap())), "summary lines are printed");
    record
}

/// Peers run when installed (Mosquitto is on this machine kind); their absence is not a failure.
fn peer_present() -> bool {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].iter().any(|p| std::path::Path::new(p).exists())
}

#[test]
fn b1_idle_devices_connect_and_are_measured() {
    let record = smoke("b1");
    let tether = &record["results"]["tether"];
    assert_eq!(tether["connected"], tether["devices"]);
    assert!(tether["bytesPerDevice"].as_f64().unwrap() > 0.0);
    assert!(tether["cpuPerConnectUs"].as_f64().unwrap() > 0.0);
    if peer_present() {
        assert_eq!(record["results"]["mosquitto"]["connected"], tether["devices"]);
    }
}

#[test]
fn b2_every_device_comes_back_after_kill_9() {
    let record = smoke("b2");
    let tether = &record["results"]["tether"];
    assert_eq!(tether["connected"], tether["devices"]);
    assert_eq!(tether["reconnected"], tether["devices"]);
    assert_eq!(tether["stuck"], 0);
    assert!(tether["allBackAfterKillSeconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn b3_posts_are_all_answered_in_order() {
    let record = smoke("b3");
    for qos in [1, 0] {
        let tether = &record["results"][format!("tether-qos{qos}")];
        assert!(tether["sent"].as_u64().unwrap() > 0);
        assert_eq!(tether["missing"], 0, "QoS {qos}");
        assert_eq!(tether["outOfOrder"], 0, "QoS {qos}");
        assert_eq!(tether["replies"], tether["sent"], "QoS {qos}");
        if peer_present() {
            assert_eq!(record["results"][format!("mosquitto-qos{qos}")]["missing"], 0);
        }
    }
    assert_eq!(record["results"]["tether-qos1"]["acked"], record["results"]["tether-qos1"]["sent"]);
}

#[test]
fn b5_rrpc_calls_are_answered_by_their_own_device() {
    let record = smoke("b5");
    let tether = &record["results"]["tether"];
    assert_eq!(tether["answered"], tether["calls"]);
    assert_eq!(tether["miscorrelated"], 0);
    assert_eq!(tether["failed"], 0);
}

#[test]
fn b6_broadcasts_reach_every_subscriber() {
    let record = smoke("b6");
    let tether = &record["results"]["tether"];
    assert_eq!(tether["missing"], 0);
    assert_eq!(
        tether["delivered"].as_u64().unwrap(),
        tether["devices"].as_u64().unwrap() * tether["broadcasts"].as_u64().unwrap()
    );
}
