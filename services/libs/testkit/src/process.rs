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
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let program = std::env::var_os("TETHER_NATS_SERVER").map(PathBuf::from).unwrap_or_else(nats_server_binary);
        assert!(program.exists(), "{} is missing: run `make deps`", program.display());
        let args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().display().to_string(),
        ];
        let mut server = Server { name: "nats-server", program, args, port, child: None, _dir: dir };
        server.spawn().await;
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
        self.server.spawn().await;
    }
}

impl RedisServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let program = PathBuf::from("redis-server");
        let args = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        let mut server = Server { name: "redis-server", program, args, port, child: None, _dir: dir };
        server.spawn().await;
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
        self.server.spawn().await;
    }
}

impl Server {
    async fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} ({}): {e}; run `make deps`", self.name, self.program.display())
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "{} did not start on port {}", self.name, self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
