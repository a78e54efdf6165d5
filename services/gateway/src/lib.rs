//! The `gateway` service: the tenant API over REST (axum, OpenAPI at `/api/v1/openapi.json`).
//!
//! Every request carries `Authorization: Bearer <api-key>`; a key sees only its tenant's
//! resources, and another tenant's resource answers 404. Errors are
//! `{"code", "message", "requestId"}` with the status of [`error`]'s one mapping.

mod error;
mod extract;
mod openapi;
mod routes;
mod things;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tether_contract::{AuthService, CommandService, ThingService};
use tether_store::SessionRoutes;
use tokio::net::TcpListener;

pub use error::ApiError;

/// The services the gateway calls.
#[derive(Clone)]
pub struct GatewayDeps {
    pub auth: Arc<dyn AuthService>,
    pub thing: Arc<dyn ThingService>,
    pub routes: Arc<dyn SessionRoutes>,
    /// Cloud-to-device calls and their records.
    pub command: Arc<dyn CommandService>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen for HTTP on {addr} (--http-addr)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The REST router, for embedding and for tests.
pub fn router(deps: GatewayDeps) -> Router {
    routes::router(deps)
}

// === impl Gateway ===

impl Gateway {
    /// Binds `addr` and serves the API until [`Gateway::stop`].
    pub async fn start(addr: SocketAddr, deps: GatewayDeps) -> Result<Self, GatewayError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind { addr, source })?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(deps);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = served.await {
                tracing::error!(%error, "http server failed");
            }
        });
        tracing::info!(addr = %local_addr, "http api started");
        Ok(Self { local_addr, shutdown, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}
