//! The scenario-test harness: [`TestPlatform`] starts `tether run`'s services in-process on free
//! ports with a fresh data directory; [`Api`] is an HTTP client with a bearer key; [`Device`]
//! and [`DeviceV5`] are real MQTT clients (rumqttc) signing in the Aliyun way.

pub mod cluster;
mod device;
mod platform;

use std::future::Future;
use std::time::Duration;

pub use device::{Device, DeviceCredentials, DeviceV5, Message, V5Ack, WAIT};
pub use platform::{Api, TestPlatform, cluster_mode};

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
