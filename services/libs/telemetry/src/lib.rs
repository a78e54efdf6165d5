//! What every role serves beside its real work: `/healthz` (the process is alive), `/readyz`
//! (its dependencies answer) and `/metrics` (Prometheus text, from one registry per process into
//! which each crate registers its own metrics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::json;

/// A dependency `/readyz` checks (NATS, Redis, another service).
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

/// A readiness check from a name and a probe (e.g. a client's `ping`).
pub fn check<F, Fut>(name: &'static str, probe: F) -> Arc<dyn ReadinessCheck>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(ProbeCheck { name, probe })
}

struct ProbeCheck<F> {
    name: &'static str,
    probe: F,
}

#[async_trait]
impl<F, Fut> ReadinessCheck for ProbeCheck<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    fn name(&self) -> &str {
        self.name
    }

    async fn check(&self) -> Result<(), String> {
        (self.probe)().await
    }
}

/// The shared metrics registry of a process.
pub type MetricsRegistry = Arc<Mutex<Registry>>;

/// A running health endpoint.
pub struct HealthServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct HealthState {
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    registry: MetricsRegistry,
}

/// A new, empty registry with the `tether` prefix.
pub fn registry() -> MetricsRegistry {
    Arc::new(Mutex::new(Registry::with_prefix("tether")))
}

// === impl HealthServer ===

impl HealthServer {
    /// Serves the endpoints on `addr`.
    pub async fn start(
        addr: SocketAddr,
        checks: Vec<Arc<dyn ReadinessCheck>>,
        registry: MetricsRegistry,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let state = HealthState { checks: Arc::new(checks), registry };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "health server failed");
            }
        });
        Ok(Self { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let mut failures = serde_json::Map::new();
    for check in state.checks.iter() {
        let outcome = tokio::time::timeout(Duration::from_secs(2), check.check()).await;
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(_) => "no answer within 2 s".to_owned(),
        };
        failures.insert(check.name().to_owned(), json!(error));
    }
    if failures.is_empty() {
        (StatusCode::OK, axum::Json(json!({"ready": true})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"ready": false, "failing": failures})))
    }
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &state.registry.lock()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    struct Flaky(Arc<Mutex<bool>>);

    #[async_trait]
    impl ReadinessCheck for Flaky {
        fn name(&self) -> &str {
            "nats"
        }
        async fn check(&self) -> Result<(), String> {
            if *self.0.lock() { Ok(()) } else { Err("connection refused".into()) }
        }
    }

    #[tokio::test]
    async fn readiness_follows_dependencies_and_metrics_render() {
        let up = Arc::new(Mutex::new(false));
        let registry = registry();
        let counter = Counter::<u64>::default();
        registry.lock().register("connects", "CONNECTs accepted", counter.clone());
        counter.inc();
        let server =
            HealthServer::start(([127, 0, 0, 1], 0).into(), vec![Arc::new(Flaky(up.clone()))], registry).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status(), 200);
        let not_ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(not_ready.status(), 503);
        assert!(not_ready.text().await.unwrap().contains("connection refused"));
        *up.lock() = true;
        assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("tether_connects_total 1"), "{metrics}");
        server.stop();
    }
}
