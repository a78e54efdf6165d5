//! Server processes for tests. Each listens on a free loopback port, keeps its data in a temp
//! directory (so a restart finds it again), and is killed when dropped.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, workspace_root};

/// `nats-server -js` on a free port, with JetStream storage in a temp dir; a restart keeps it.
pub type NatsServer = TestServer<Nats>;

/// `redis-server` on a free port, with no persistence: a restart comes back empty.
pub type RedisServer = TestServer<Redis>;

/// Which server a [`TestServer`] runs.
pub trait ServerKind {
    const NAME: &'static str;
    const SCHEME: &'static str;
    fn program() -> PathBuf;
    /// The command line for a port and the data directory.
    fn args(port: u16, dir: &str) -> Vec<String>;
}

pub struct Nats;
pub struct Redis;

/// A server process of kind `K` for one test.
pub struct TestServer<K: ServerKind> {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    _kind: PhantomData<K>,
}

/// `.venv/bin/nats-server` of the checkout the test runs in (found from the working directory,
/// so checkouts sharing one target directory each use their own), else of this crate's workspace.
fn nats_server_binary() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .map(|dir| dir.join(".venv/bin/nats-server"))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| workspace_root().join(".venv/bin/nats-server"))
}

impl ServerKind for Nats {
    const NAME: &'static str = "nats-server";
    const SCHEME: &'static str = "nats";

    fn program() -> PathBuf {
        std::env::var_os("TETHER_NATS_SERVER").map(PathBuf::from).unwrap_or_else(nats_server_binary)
    }

    fn args(port: u16, dir: &str) -> Vec<String> {
        ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", dir].map(str::to_owned).to_vec()
    }
}

impl ServerKind for Redis {
    const NAME: &'static str = "redis-server";
    const SCHEME: &'static str = "redis";

    fn program() -> PathBuf {
        PathBuf::from("redis-server")
    }

    fn args(port: u16, dir: &str) -> Vec<String> {
        ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no", "--dir", dir]
            .map(str::to_owned)
            .to_vec()
    }
}

impl<K: ServerKind> TestServer<K> {
    /// Starts a server on a free port and waits until it accepts connections; a port taken by a
    /// parallel test between the pick and the bind (the server exits) is replaced by another.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self { port: 0, child: None, dir, _kind: PhantomData };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("{} did not start on five free ports", K::NAME);
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", K::SCHEME, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port (clients keep their address) and
    /// data directory.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "{} could not start again on port {}", K::NAME, self.port);
    }

    /// Runs the server on `self.port`; `false` when it exited instead (its port was taken).
    async fn spawn(&mut self) -> bool {
        let program = K::program();
        assert!(program.exists() || !program.is_absolute(), "{} is missing: run `make deps`", program.display());
        let args = K::args(self.port, &self.dir.path().display().to_string());
        let child = Command::new(&program).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let child =
            child.unwrap_or_else(|e| panic!("cannot start {} ({}): {e}; run `make deps`", K::NAME, program.display()));
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
            assert!(tokio::time::Instant::now() < deadline, "{} did not start on port {}", K::NAME, self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }
}

impl<K: ServerKind> Drop for TestServer<K> {
    fn drop(&mut self) {
        self.kill();
    }
}
