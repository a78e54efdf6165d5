//! Typed records in a [`KvStore`], and the compare-and-set loop every read-modify-write uses:
//! read the record and its revision, compute the new value, write it only if the revision is
//! unchanged, else read again. Two concurrent writers can never both win.
//!
//! Records are JSON. Errors are the services' [`ServiceError`], since every caller is a service
//! answering its own callers; key naming stays with each service.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_contract::ServiceError;

use crate::{Expect, KvStore, StoreError};

/// How often a read-modify-write is retried after losing a race before giving up.
const MAX_ATTEMPTS: usize = 32;

/// Reads and writes JSON records in a [`KvStore`].
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn KvStore>,
}

/// What a read-modify-write step decided.
pub enum Change<T> {
    /// Store this value.
    Put(T),
    /// Delete the record.
    Delete,
    /// Leave the record as it is.
    Keep,
}

// === impl Records ===

impl Records {
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { store }
    }

    /// The store underneath, for listings and records that are not JSON.
    pub fn store(&self) -> &dyn KvStore {
        self.store.as_ref()
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ServiceError> {
        match self.store.get(key).await? {
            Some(entry) => Self::decode(key, &entry.value).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `value` when `expect` holds.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T, expect: Expect) -> Result<(), ServiceError> {
        self.store.put(key, encode(value)?, expect).await?;
        Ok(())
    }

    pub async fn delete(&self, key: &str, expect: Expect) -> Result<(), ServiceError> {
        Ok(self.store.delete(key, expect).await?)
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
            let entry = self.store.get(key).await.map_err(ServiceError::from)?;
            let (current, expect) = match &entry {
                Some(entry) => (Some(Self::decode(key, &entry.value)?), Expect::Revision(entry.revision)),
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
                Err(error) => return Err(ServiceError::from(error).into()),
            }
        }
        Err(ServiceError::Conflict { what: key.to_owned() }.into())
    }

    /// Reads the record stored under `key` from its raw bytes.
    pub fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, ServiceError> {
        serde_json::from_slice(raw)
            .map_err(|e| ServiceError::Internal(format!("stored record {key} is unreadable: {e}")))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, ServiceError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| ServiceError::Internal(e.to_string()))
}

// === impl StoreError ===

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { key } => ServiceError::Conflict { what: key },
            StoreError::Backend(reason) => ServiceError::Unavailable(reason),
        }
    }
}
