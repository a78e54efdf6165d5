//! The ntex-mqtt adapter: runs the MQTT server on its own ntex runtime thread and converts
//! MQTT 3.1.1 ([`v3`]) and 5.0 ([`v5`]) packets to session calls.

mod v3;
mod v5;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use ntex_mqtt::{MqttServer, MqttServiceConfig, QoS};
use ntex_service::cfg::SharedCfg;
use ntex_service::{fn_factory_with_config, fn_service};
use ntex_util::time::Seconds;

use crate::session::{ConnectRequest, Connection};
use crate::{EdgeError, EdgeShared};

/// Stops the server thread.
pub struct ServerHandle {
    server: ntex_server::Server<ntex_server::net::Connection>,
    thread: thread::JoinHandle<()>,
}

/// The error type of the MQTT services: any of them failing closes that connection only.
#[derive(Debug)]
pub struct HandlerError(pub String);

// === impl ServerHandle ===

impl ServerHandle {
    /// Stops accepting new connections.
    pub async fn pause(&self) {
        self.server.pause().await;
    }

    /// Stops the workers and waits for the server thread.
    ///
    /// Not ntex's graceful stop. By this point [`crate::Edge::drain`] has paused accepting and
    /// kicked every device, and it waits for each session's end itself (the presence task ends
    /// once every connection has dropped its state). ntex's graceful stop does not wait for
    /// connections. It only waits for each worker to confirm its stop, and ntex-server 3.11
    /// (4.1 too) can lose that confirmation: if the worker is ready before the server's manager
    /// first checks it, the manager registers the same worker twice (`start_worker` sees its
    /// status, then the same change again as an update). It then sends two stop requests. The
    /// worker answers the first and exits. The second stays queued and is never answered, so
    /// `stop(true)` waited out the whole 30 s shutdown timeout, in roughly one start in ten.
    pub async fn stop(self) {
        self.server.stop(false).await;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

impl From<()> for HandlerError {
    fn from((): ()) -> Self {
        HandlerError("connection service failed".into())
    }
}

impl TryFrom<HandlerError> for ntex_mqtt::v5::PublishAck {
    type Error = HandlerError;

    fn try_from(err: HandlerError) -> Result<Self, HandlerError> {
        Err(err)
    }
}

/// The CONNECT fields admission needs, from either protocol version's packet.
fn connect_request(
    client_id: &ntex_bytes::ByteString,
    username: Option<&ntex_bytes::ByteString>,
    password: Option<&ntex_bytes::Bytes>,
    keep_alive: u16,
    io: &ntex_io::IoBoxed,
) -> ConnectRequest {
    ConnectRequest {
        client_id: client_id.to_string(),
        username: username.map(ToString::to_string),
        password: password.map(|p| bytes::Bytes::copy_from_slice(p)),
        keep_alive,
        peer: io.query::<ntex_io::types::PeerAddr>().get().map(ntex_io::types::PeerAddr::into_inner),
    }
}

/// Pending connections the kernel queues for the listener (capped by `net.core.somaxconn`). With
/// std's 128, a reconnect storm overflowed it: dropped SYNs are retried after 1, 3, 7 s..., and
/// 19 k devices took 22 s to be back after a restart (docs/benchmarks.md, B2).
const LISTEN_BACKLOG: i32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    // As std does: a restarted edge can bind while old connections sit in TIME_WAIT; a port
    // another process listens on is still refused.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Binds the listener and starts the MQTT server thread.
pub fn serve(shared: Arc<EdgeShared>) -> Result<(ServerHandle, SocketAddr), EdgeError> {
    let addr = shared.config.mqtt_addr;
    let listener = listen(addr).map_err(|source| EdgeError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| EdgeError::Bind { addr, source })?;
    let workers = shared.config.workers.max(1);
    let max_payload = shared.config.max_payload_bytes;
    // Frames up to 4x the payload limit are read so the device gets an Alink 400 and stays
    // connected; anything larger is a protocol error that closes the connection.
    let max_frame = u32::try_from(max_payload.saturating_mul(4).max(64 * 1024)).unwrap_or(u32::MAX);
    // MQTT 5 clients are asked for one PUBLISH in flight (receive maximum 1); what any client
    // pipelines anyway is handled in arrival order (see `ConnState::publish_turn`).
    let mqtt_config = MqttServiceConfig::new()
        .set_max_receive(1)
        .set_max_qos(QoS::AtLeastOnce)
        .set_max_size(max_frame)
        .set_max_receive_size(max_frame as usize * 2)
        .set_max_payload_buffer_size(max_frame as usize)
        .set_connect_timeout(Seconds(10))
        .set_handshake_timeout(Seconds(15));

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = thread::Builder::new()
        .name("tether-mqtt".into())
        .spawn(move || {
            let result =
                ntex_rt::System::build().name("tether-mqtt").signals(false).build(ntex_net::DefaultRuntime).block_on(
                    async move {
                        let factory_shared = shared.clone();
                        let server = ntex_server::net::ServerBuilder::default()
                            .workers(workers)
                            .disable_signals()
                            .listen("mqtt", listener, async move |_| {
                                let shared = factory_shared.clone();
                                mqtt_server(shared)
                            })?
                            .config("mqtt", SharedCfg::new("MQTT").add(mqtt_config))
                            .run();
                        let _ = ready_tx.send(Ok(server.clone()));
                        server.await
                    },
                );
            if let Err(error) = result {
                tracing::error!(%error, "mqtt server stopped with an error");
            }
        })
        .map_err(|e| EdgeError::Runtime(e.to_string()))?;
    let server = ready_rx
        .recv()
        .map_err(|_| EdgeError::Runtime("mqtt server thread exited during start".into()))?
        .map_err(|e: std::io::Error| EdgeError::Runtime(e.to_string()))?;
    Ok((ServerHandle { server, thread }, local_addr))
}

/// Both protocol versions on one listener; each connection gets its [`Connection`] as state.
fn mqtt_server(shared: Arc<EdgeShared>) -> impl ntex_service::ServiceFactory<ntex_io::Io, SharedCfg> + 'static {
    let shared_v3 = shared.clone();
    let v3 =
        ntex_mqtt::v3::MqttServer::new(fn_service(move |handshake| v3::handshake_v3(shared_v3.clone(), handshake)))
            .protocol(fn_factory_with_config(async |session: ntex_mqtt::v3::Session<Connection>| {
                Ok::<_, HandlerError>(fn_service(move |msg| v3::protocol_v3(session.clone(), msg)))
            }))
            .publish(fn_factory_with_config(async |session: ntex_mqtt::v3::Session<Connection>| {
                Ok::<_, HandlerError>(fn_service(move |publish| v3::publish_v3(session.clone(), publish)))
            }));
    let v5 = ntex_mqtt::v5::MqttServer::new(fn_service(move |handshake| v5::handshake_v5(shared.clone(), handshake)))
        .control(fn_factory_with_config(async |_: ntex_mqtt::v5::Session<Connection>| {
            Ok::<_, HandlerError>(fn_service(async |_: ntex_mqtt::Control<HandlerError>| {
                Ok::<_, HandlerError>(None::<ntex_mqtt::v5::codec::Encoded>)
            }))
        }))
        .protocol(fn_factory_with_config(async |session: ntex_mqtt::v5::Session<Connection>| {
            Ok::<_, HandlerError>(fn_service(move |msg| v5::protocol_v5(session.clone(), msg)))
        }))
        .publish(fn_factory_with_config(async |session: ntex_mqtt::v5::Session<Connection>| {
            Ok::<_, HandlerError>(fn_service(move |publish| v5::publish_v5(session.clone(), publish)))
        }));
    MqttServer::new().v3(v3).v5(v5)
}
