//! Server processes for tests. Each listens on a free loopback port, keeps its data in a temp
//! directory (so a restart finds it again), and is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, workspace_root};

/// `.venv/bin/nats-server` of the checkout the test runs in (found from the working directory,
/// so checkouts sharing one target directory each use their own), else of this crate's workspace.
fn nats_server_binary() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .map(|dir| dir.join(".venv/bin/nats-server"))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| workspace_root().join(".venv/bin/nats-server"))
}

/// `nats-server -js` on a free port, with JetStream storage in a temp dir.
pub struct NatsServer {
    server: Server,
}

/// `redis-server` on a free port, with no persistence.
pub struct RedisServer {
    server: Server,
}

struct Server {
    name: &'static str,
    program: PathBuf,
    /// The command line for a port and the data directory.
    args: fn(u16, &str) -> Vec<String>,
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        let program = std::env::var_os("TETHER_NATS_SERVER").map(PathBuf::from).unwrap_or_else(nats_server_binary);
        assert!(program.exists(), "{} is missing: run `make deps`", program.display());
        let args = |port: u16, dir: &str| -> Vec<String> {
            ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", dir].map(str::to_owned).to_vec()
        };
        let server = Server::start("nats-server", program, args).await;
        Self { server }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts again on the same port and storage.
    pub async fn restart(&mut self) {
        self.server.kill();
        self.server.respawn().await;
    }
}

impl RedisServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        let args = |port: u16, dir: &str| -> Vec<String> {
            ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no", "--dir", dir]
                .map(str::to_owned)
                .to_vec()
        };
        let server = Server::start("redis-server", PathBuf::from("redis-server"), args).await;
        Self { server }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `kill -9`: everything in it is gone.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.server.kill();
        self.server.respawn().await;
    }
}

impl Server {
    /// Starts on a free port; a port taken by a parallel test between the pick and the bind
    /// (the server exits) is replaced by another.
    async fn start(name: &'static str, program: PathBuf, args: fn(u16, &str) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self { name, program, args, port: 0, child: None, dir };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("{name} did not start on five free ports");
    }

    /// Runs the server on `self.port`; `false` when it exited instead (its port was taken).
    async fn spawn(&mut self) -> bool {
        let args = (self.args)(self.port, &self.dir.path().display().to_string());
        let child =
            Command::new(&self.program).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(
                |e| panic!("cannot start {} ({}): {e}; run `make deps`", self.name, self.program.display()),
            );
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.exited() {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                // Whoever answered, our server must still be running for it to be ours.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return !self.exited();
            }
            assert!(tokio::time::Instant::now() < deadline, "{} did not start on port {}", self.name, self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Starts again on the same port (a restart must keep the address clients know).
    async fn respawn(&mut self) {
        assert!(self.spawn().await, "{} could not start again on port {}", self.name, self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
