//! The edge's copy of each product's thing model, so validating a post never waits for the thing
//! service. An entry is dropped when the thing service announces a change
//! (`tether_bus::subject::THING_MODEL_CHANGED`) and refetched after [`MAX_AGE`] in any case, so a missed
//! announcement (a bus outage) heals by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tether_bus::Subscription;
use tether_contract::{ServiceError, ThingService};
use tether_model::{ProductKey, Tsl};

/// The longest a cached model is used without asking the thing service again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Thing models by product, fetched on first use.
pub struct ThingModels {
    thing: Arc<dyn ThingService>,
    cache: RwLock<HashMap<ProductKey, Cached>>,
    /// Bumped by every change announcement: a fetch that overlapped one is not cached.
    generation: AtomicU64,
}

struct Cached {
    model: Option<Arc<Tsl>>,
    fetched: Instant,
}

// === impl ThingModels ===

impl ThingModels {
    pub fn new(thing: Arc<dyn ThingService>) -> Self {
        Self { thing, cache: RwLock::new(HashMap::new()), generation: AtomicU64::new(0) }
    }

    /// The product's thing model; `None` when it has none.
    pub async fn get(&self, product_key: &ProductKey) -> Result<Option<Arc<Tsl>>, ServiceError> {
        if let Some(cached) = self.cache.read().get(product_key)
            && cached.fetched.elapsed() < MAX_AGE
        {
            return Ok(cached.model.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let model = self.thing.get_thing_model(product_key).await?.map(Arc::new);
        if self.generation.load(Ordering::Acquire) == generation {
            let cached = Cached { model: model.clone(), fetched: Instant::now() };
            self.cache.write().insert(product_key.clone(), cached);
        }
        Ok(model)
    }

    pub fn forget(&self, product_key: &ProductKey) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.write().remove(product_key);
    }
}

/// Drops cached models as the thing service announces changes.
pub async fn forget_changed(models: Arc<ThingModels>, mut changes: Subscription) {
    while let Some(message) = changes.next().await {
        match std::str::from_utf8(&message.payload).ok().and_then(|pk| ProductKey::new(pk).ok()) {
            Some(product_key) => models.forget(&product_key),
            None => tracing::warn!(subject = %message.subject, "unreadable thing model change skipped"),
        }
    }
}
