//! The `gateway` service: the tenant API over REST (axum, OpenAPI at `/api/v1/openapi.json`)
//! and gRPC (`tether.v1.Gateway`: the cloud-to-device operations and thing reads).
//!
//! Every request carries `Authorization: Bearer <api-key>` (gRPC: the `authorization`
//! metadata); a key sees only its tenant's resources, and another tenant's resource answers 404
//! (gRPC `NOT_FOUND`). REST errors are `{"code", "message", "requestId"}` with the status of
//! [`error`]'s one mapping; gRPC errors are `ServiceError::to_status`.

mod calls;
mod commands;
mod error;
mod extract;
mod grpc;
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

/// Where the gateway listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayAddrs {
    /// The REST API.
    pub http: SocketAddr,
    /// The gRPC API (`tether.v1.Gateway`).
    pub grpc: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen for HTTP on {addr} (--http-addr)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for gRPC on {addr} (--grpc-addr)")]
    BindGrpc { addr: SocketAddr, source: std::io::Error },
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    grpc_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    http: tokio::task::JoinHandle<()>,
    grpc: tokio::task::JoinHandle<()>,
}

/// The REST router, for embedding and for tests.
pub fn router(deps: GatewayDeps) -> Router {
    routes::router(Arc::new(deps))
}

// === impl Gateway ===

impl Gateway {
    /// Binds both addresses and serves the APIs until [`Gateway::stop`].
    pub async fn start(addrs: GatewayAddrs, deps: GatewayDeps) -> Result<Self, GatewayError> {
        let (http_listener, local_addr) =
            bind(addrs.http).await.map_err(|source| GatewayError::Bind { addr: addrs.http, source })?;
        let (grpc_listener, grpc_addr) =
            bind(addrs.grpc).await.map_err(|source| GatewayError::BindGrpc { addr: addrs.grpc, source })?;
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let deps = Arc::new(deps);
        let app = routes::router(deps.clone());
        let http_stopped = stopped.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(http_listener, app).with_graceful_shutdown(stopping(http_stopped));
            if let Err(error) = served.await {
                tracing::error!(%error, "http server failed");
            }
        });
        let grpc = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            let served = tonic::transport::Server::builder()
                .add_service(grpc::GatewayGrpc::new(deps).into_service())
                .serve_with_incoming_shutdown(incoming, stopping(stopped));
            if let Err(error) = served.await {
                tracing::error!(%error, "grpc server failed");
            }
        });
        tracing::info!(addr = %local_addr, %grpc_addr, "http and grpc api started");
        Ok(Self { local_addr, grpc_addr, shutdown, http, grpc })
    }

    /// Where the REST API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the gRPC API listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        let _ = self.grpc.await;
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves once the gateway is told to stop.
async fn stopping(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
