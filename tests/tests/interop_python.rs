//! Interop: the unmodified official Aliyun Python device SDK (`aliyun-iot-linkkit`, on
//! paho-mqtt 1.x) against Tether. The SDK side is a script in `tests/interop/` per scenario, run
//! with the repository's virtualenv (`make deps` creates it).

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_tests::{DeviceCredentials, TestPlatform, eventually};

/// Per-step timeout handed to the script (connect, reply, hold, disconnect).
const SCRIPT_STEP_TIMEOUT_SECS: u64 = 20;
/// How long the test waits for the script as a whole.
const SCRIPT_RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `.venv/bin/python`; fails (never skips) when the virtualenv is missing.
fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make deps` (scripts/deps.sh) to create the virtualenv with aliyun-iot-linkkit and paho-mqtt<2",
        python.display()
    );
    python
}

/// The arguments every script takes: where to connect, as which device, and the step timeout.
fn device_args(addr: SocketAddr, device: &DeviceCredentials) -> Vec<String> {
    vec![
        "--host".into(),
        addr.ip().to_string(),
        "--port".into(),
        addr.port().to_string(),
        "--product-key".into(),
        device.product_key.clone(),
        "--device-name".into(),
        device.device_name.clone(),
        "--device-secret".into(),
        device.device_secret.clone(),
        "--timeout".into(),
        SCRIPT_STEP_TIMEOUT_SECS.to_string(),
    ]
}

/// Waits until `device` (the script's `what`) is ONLINE and returns its status body; fails as soon
/// as the script exits first.
async fn online_while_running(
    platform: &TestPlatform,
    script: &mut Script,
    device: &DeviceCredentials,
    what: &str,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = platform.status(device).await;
        if status == "ONLINE" {
            return body;
        }
        if let Some(exit) = script.child().try_wait().expect("poll script") {
            panic!("the script exited before the {what} was ONLINE (status {body}):\n{}", script.exited_output(exit));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not ONLINE within {within:?} (status {body}); script stderr:\n{}",
            script.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The script's process; killed if the test fails while it runs.
struct Script {
    child: Option<Child>,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

struct ScriptOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Script {
    /// Runs `tests/interop/{name}` with `args`.
    fn spawn(python: &Path, name: &str, args: &[String]) -> Self {
        let script = workspace_root().join("tests/interop").join(name);
        let dir = tempfile::tempdir().expect("temp dir");
        // stderr (SDK and paho debug logs) goes to a file so a full pipe can never stall the SDK.
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("stderr file");
        let child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
        Self { child: Some(child), stderr_path, _dir: dir }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("script is running")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Closes the script's stdin, which ends its `--hold`.
    fn release(&mut self) {
        drop(self.child().stdin.take());
    }

    /// Waits for the script to exit (bounded) and collects its output.
    async fn output(mut self) -> ScriptOutput {
        let deadline = tokio::time::Instant::now() + SCRIPT_RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child().try_wait().expect("poll script") {
                break status;
            }
            // On timeout the panic drops `self`, which kills the script.
            assert!(
                tokio::time::Instant::now() < deadline,
                "the script did not exit within {SCRIPT_RUN_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // One short line: it fits the pipe, so reading after exit cannot deadlock.
        let mut stdout = String::new();
        if let Some(out) = self.child().stdout.as_mut() {
            out.read_to_string(&mut stdout).expect("script stdout");
        }
        ScriptOutput { status, stdout, stderr: self.stderr() }
    }

    /// Output so far of a script that has already exited.
    fn exited_output(&mut self, status: ExitStatus) -> String {
        let mut stdout = String::new();
        if let Some(out) = self.child().stdout.as_mut() {
            let _ = out.read_to_string(&mut stdout);
        }
        format!("exit: {status}\nstdout: {stdout}\nstderr:\n{}", self.stderr())
    }

    /// Waits for the script to exit successfully and returns the JSON line it printed last (what
    /// the SDK observed), with the run's report for assertion messages.
    async fn observed(self) -> (Value, String) {
        let output = self.output().await;
        let report = format!("exit: {}\nstdout: {}\nstderr:\n{}", output.status, output.stdout, output.stderr);
        let line = output.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let observed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON line from the script ({e}):\n{report}"));
        eprintln!("the SDK observed: {observed}");
        assert!(output.status.success(), "the SDK run failed: {observed}\n{report}");
        (observed, report)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_linkkit_sdk_posts_a_property_and_gets_code_200() {
    let python = venv_python();
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let addr = platform.mqtt_addr();

    let mut script = Script::spawn(
        &python,
        "linkkit_property_post.py",
        &[device_args(addr, &creds), vec!["--hold".into()]].concat(),
    );

    // The SDK holds its connection (`--hold`) until stdin closes: the device must show ONLINE.
    let within = Duration::from_secs(SCRIPT_STEP_TIMEOUT_SECS);
    let online = online_while_running(&platform, &mut script, &creds, "device", within).await;
    assert!(online["timestamp"].is_i64(), "{online}");

    script.release();
    let (observed, report) = script.observed().await;
    assert_eq!(observed["connected"], true, "{observed}");
    assert_eq!(observed["prop_post_code"], 200, "on_thing_prop_post code: {observed}\n{report}");
    assert_eq!(observed["prop_post_reply"]["message"], "success", "{observed}");
    assert_eq!(
        observed["prop_post_reply"]["id"], observed["prop_post_request_id"],
        "the reply answers the request: {observed}"
    );

    // After the SDK's DISCONNECT the device is OFFLINE, remembering when it was online.
    let offline = eventually("device OFFLINE after the script exits", Duration::from_secs(10), || async {
        let (status, body) = platform.status(&creds).await;
        (status == "OFFLINE").then_some(body)
    })
    .await;
    assert!(offline["lastOnlineTime"].is_i64(), "{offline}");
    assert!(offline["lastOfflineTime"].as_i64() >= offline["lastOnlineTime"].as_i64(), "{offline}");

    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_linkkit_sdk_posts_an_event_and_updates_tags() {
    let python = venv_python();
    let platform = TestPlatform::start().await;
    let pk = platform.create_product().await;
    let tsl = json!({
        "properties": [],
        "events": [{ "identifier": "Overheat", "name": "overheat", "type": "alert",
                     "outputData": [{ "identifier": "level", "name": "level",
                                      "dataType": { "type": "int", "specs": { "min": "1", "max": "3" } } }] }],
        "services": []
    });
    let (status, body) = platform.api.put(&format!("/products/{pk}/thing-model"), tsl.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let creds = platform.register_device(&pk).await;
    let mut events = platform.bus().consume("interop-events", "tether.up.*.*.*.event").await.unwrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let tsl_path = dir.path().join("tsl.json");
    std::fs::write(&tsl_path, tsl.to_string()).expect("tsl file");
    let addr = platform.mqtt_addr();

    let script = Script::spawn(
        &python,
        "linkkit_thing.py",
        &[
            device_args(addr, &creds),
            vec![
                "--tsl".into(),
                tsl_path.display().to_string(),
                "--event".into(),
                "Overheat".into(),
                "--event-params".into(),
                json!({"level": 2}).to_string(),
                "--tags".into(),
                json!({"room": "lab", "floor": "3"}).to_string(),
            ],
        ]
        .concat(),
    );
    let (observed, _) = script.observed().await;
    assert_eq!(observed["event_post"]["code"], 200, "{observed}");
    assert_eq!(observed["event_post"]["event"], "Overheat", "{observed}");
    assert_eq!(observed["tags_reply"]["code"], 200, "{observed}");

    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    let event: Value = serde_json::from_slice(&delivery.message.payload).unwrap();
    assert_eq!((event["identifier"].as_str(), &event["value"]), (Some("Overheat"), &json!({"level": 2})), "{event}");
    delivery.ack().await.unwrap();
    let (status, device) = platform.api.get(&format!("/products/{pk}/devices/{}", creds.device_name)).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(
        device["tags"],
        json!([{"attrKey": "floor", "attrValue": "3"}, {"attrKey": "room", "attrValue": "lab"}])
    );
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_linkkit_gateway_attaches_and_logs_in_a_sub_device() {
    let python = venv_python();
    let platform = TestPlatform::start().await;
    let (status, body) = platform.api.post("/products", json!({"name": "gateway", "nodeType": "gateway"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let gateway = platform.register_device(body["productKey"].as_str().unwrap()).await;
    let sub = platform.device().await;
    let addr = platform.mqtt_addr();

    let mut script = Script::spawn(
        &python,
        "linkkit_gateway.py",
        &[
            device_args(addr, &gateway),
            vec![
                "--sub-product-key".into(),
                sub.product_key.clone(),
                "--sub-device-name".into(),
                sub.device_name.clone(),
                "--sub-device-secret".into(),
                sub.device_secret.clone(),
                "--hold".into(),
            ],
        ]
        .concat(),
    );

    // The SDK holds the gateway's connection (`--hold`) after the login: the sub-device is ONLINE.
    let within = Duration::from_secs(SCRIPT_STEP_TIMEOUT_SECS * 3);
    online_while_running(&platform, &mut script, &sub, "sub-device", within).await;
    let path = format!("/products/{}/devices/{}/sub-devices", gateway.product_key, gateway.device_name);
    let (status, topology) = platform.api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{topology}");
    assert_eq!(topology["items"][0]["deviceName"], sub.device_name.as_str(), "{topology}");

    script.release();
    let (observed, _) = script.observed().await;
    let identity = json!({"productKey": sub.product_key, "deviceName": sub.device_name});
    assert_eq!(observed["topo_add"]["data"], json!([identity]), "{observed}");
    assert_eq!(observed["login"]["data"], json!([identity]), "{observed}");
    assert_eq!((&observed["sub_post_reply"]["id"], &observed["sub_post_reply"]["code"]), (&json!("77"), &json!(200)));
    assert_eq!(observed["logout"]["code"], 200, "{observed}");

    // Logged out by the SDK, then the gateway gone: the sub-device is OFFLINE.
    eventually("sub-device OFFLINE", Duration::from_secs(10), || async {
        (platform.status(&sub).await.0 == "OFFLINE").then_some(())
    })
    .await;
    platform.stop().await;
}
