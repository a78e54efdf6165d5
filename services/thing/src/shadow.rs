//! The device shadow as stored: every write is a compare-and-set of the whole document, so two
//! concurrent writers (a device's `update` and an app's desired change) can never both win with
//! the same version. The rules themselves are `tether_model::shadow`'s.

use bytes::Bytes;
use serde_json::{Map, Value};
use tether_contract::{DeviceMessage, ServiceError, now_ms};
use tether_model::shadow::{self, ShadowDocument, ShadowError};
use tether_model::topic::ShadowOp;
use tether_model::{DeviceKey, Topic};
use tether_store::records::Change;

use crate::Thing;
use crate::records;

// === impl Thing ===

impl Thing {
    /// Answers a device's `/shadow/update` request on `/shadow/get`.
    pub(crate) async fn shadow_request(
        &self,
        device: &DeviceKey,
        payload: &[u8],
    ) -> Result<DeviceMessage, ServiceError> {
        let key = records::device_key("shadow", device);
        let reply = self
            .records
            .update(&key, |stored: Option<ShadowDocument>| {
                let outcome = shadow::handle_device_request(stored.as_ref(), payload, now_s());
                if let Some(error) = &outcome.error {
                    tracing::debug!(%device, code = error.code, message = %error.message, "shadow request refused");
                }
                let change = outcome.store.map_or(Change::Keep, Change::Put);
                Ok::<_, ServiceError>((change, outcome.reply))
            })
            .await?;
        Ok(DeviceMessage { topic: shadow_get_topic(device), payload: Bytes::from(reply) })
    }

    /// Sets desired attributes from the cloud and pushes `control` to the device when online.
    pub(crate) async fn set_shadow_desired(
        &self,
        device: &DeviceKey,
        desired: Map<String, Value>,
        version: i64,
    ) -> Result<Value, ServiceError> {
        let key = records::device_key("shadow", device);
        let (document, push) = self
            .records
            .update(&key, |stored: Option<ShadowDocument>| {
                let mut document = stored.unwrap_or_default();
                match shadow::apply_desired(&mut document, desired.clone(), version, now_s()) {
                    Ok(push) => Ok((Change::Put(document.clone()), (document, push))),
                    Err(error) => Err(refused(&error)),
                }
            })
            .await?;
        let payload = Bytes::from(push.to_string());
        self.push(device, shadow_get_topic(device), payload).await;
        serde_json::to_value(&document).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    pub(crate) async fn shadow_document(&self, device: &DeviceKey) -> Result<Option<Value>, ServiceError> {
        let stored: Option<ShadowDocument> = self.records.get(&records::device_key("shadow", device)).await?;
        stored.map(|doc| serde_json::to_value(&doc).map_err(|e| ServiceError::Internal(e.to_string()))).transpose()
    }
}

fn refused(error: &ShadowError) -> ServiceError {
    let field = if error.code == ShadowError::INVALID_VERSION { "version" } else { "state.desired" };
    ServiceError::invalid(field, &error.message)
}

fn shadow_get_topic(device: &DeviceKey) -> String {
    Topic::Shadow { device: device.clone(), op: ShadowOp::Get }.to_string()
}

/// Shadow timestamps are in seconds.
fn now_s() -> i64 {
    now_ms() / 1000
}
