//! Typed records in the [`KvStore`], and the compare-and-set loop every read-modify-write uses:
//! read the record and its revision, compute the new value, write it only if the revision is
//! unchanged, else read again. Two concurrent writers can never both win.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_contract::ServiceError;
use tether_model::{DeviceKey, ProductKey};
use tether_store::{Expect, KvStore, StoreError};

/// How often a read-modify-write is retried after losing a race before giving up.
const MAX_ATTEMPTS: usize = 32;

#[derive(Clone)]
pub(crate) struct Records {
    store: Arc<dyn KvStore>,
}

/// What a read-modify-write step decided.
pub(crate) enum Change<T> {
    /// Store this value.
    Put(T),
    /// Delete the record.
    Delete,
    /// Leave the record as it is.
    Keep,
}

pub(crate) fn model_key(product_key: &ProductKey) -> String {
    format!("thing/model/{product_key}")
}

/// `thing/{kind}/{pk}/{dn}`: a device's record of one kind.
pub(crate) fn device_key(kind: &str, device: &DeviceKey) -> String {
    format!("thing/{kind}/{}/{}", device.product_key, device.device_name)
}

// === impl Records ===

impl Records {
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { store }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ServiceError> {
        match self.store.get(key).await.map_err(store_error)? {
            Some(entry) => decode(key, &entry.value).map(Some),
            None => Ok(None),
        }
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ServiceError> {
        self.store.put(key, encode(value)?, Expect::Any).await.map_err(store_error)?;
        Ok(())
    }

    pub async fn delete(&self, key: &str, expect: Expect) -> Result<(), ServiceError> {
        self.store.delete(key, expect).await.map_err(store_error)
    }

    /// Applies `step` to the stored record with compare-and-set, retrying when another writer
    /// got there first; returns what the winning `step` returned.
    pub async fn update<T, R, E>(
        &self,
        key: &str,
        mut step: impl FnMut(Option<T>) -> Result<(Change<T>, R), E>,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<ServiceError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let entry = self.store.get(key).await.map_err(store_error)?;
            let (current, expect) = match &entry {
                Some(entry) => (Some(decode(key, &entry.value)?), Expect::Revision(entry.revision)),
                None => (None, Expect::Absent),
            };
            let (change, outcome) = step(current)?;
            let written = match change {
                Change::Put(value) => self.store.put(key, encode(&value)?, expect).await.map(|_| ()),
                Change::Delete if entry.is_some() => self.store.delete(key, expect).await,
                Change::Delete | Change::Keep => return Ok(outcome),
            };
            match written {
                Ok(()) => return Ok(outcome),
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(store_error(error).into()),
            }
        }
        Err(ServiceError::Conflict { what: key.to_owned() }.into())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, ServiceError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| ServiceError::Internal(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(raw).map_err(|e| ServiceError::Internal(format!("stored record {key} is unreadable: {e}")))
}

pub(crate) fn store_error(err: StoreError) -> ServiceError {
    match err {
        StoreError::Conflict { key } => ServiceError::Conflict { what: key },
        StoreError::Backend(reason) => ServiceError::Unavailable(reason),
    }
}
