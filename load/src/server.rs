//! The system under test: `tether run` or a peer broker started by the scenario on free loopback
//! ports with a fresh data directory, or a server already running (`--attach`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tether,
    Mosquitto,
    Rumqttd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tether => "tether",
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
        }
    }
}

/// How to start a server: program, arguments, environment.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub struct Server {
    pub kind: Kind,
    pub pid: u32,
    pub mqtt: SocketAddr,
    /// Tether's HTTP API and admin key.
    pub http: Option<SocketAddr>,
    pub key: Option<String>,
    child: Option<Child>,
    command: Option<Launch>,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// `tether run` (embedded mode, durable store and bus) on free ports.
    pub async fn tether(bin: &Path) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!("no tether binary at {} (build it, or pass --tether-bin)", bin.display());
        }
        let dir = tempfile::tempdir()?;
        let (mqtt, http, grpc) = (free_addr()?, free_addr()?, free_addr()?);
        let key = format!("load-{}", std::process::id());
        let args = vec![
            "run".to_owned(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--mqtt-addr={mqtt}"),
            format!("--http-addr={http}"),
            format!("--grpc-addr={grpc}"),
        ];
        let env = vec![("TETHER_ADMIN_KEY".to_owned(), key.clone())];
        let log = dir.path().join("tether.log");
        let mut server = Self {
            kind: Kind::Tether,
            pid: 0,
            mqtt,
            http: Some(http),
            key: Some(key),
            child: None,
            command: Some(Launch { program: bin.to_owned(), args, env }),
            log,
            _dir: Some(dir),
        };
        server.start().await?;
        Ok(server)
    }

    /// Mosquitto from Debian's package, anonymous, no persistence, on a free port.
    pub async fn mosquitto() -> anyhow::Result<Self> {
        let bin = mosquitto_binary().context("mosquitto is not installed (apt-get install mosquitto)")?;
        let dir = tempfile::tempdir()?;
        let mqtt = free_addr()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\nlog_type error\n",
                mqtt.port()
            ),
        )?;
        let log = dir.path().join("mosquitto.log");
        let args = vec!["-c".to_owned(), conf.display().to_string()];
        Self::peer(Kind::Mosquitto, bin, args, mqtt, log, dir).await
    }

    /// rumqttd (`cargo install rumqttd`), one MQTT 3.1.1 listener on a free port, no console or
    /// metrics endpoint.
    pub async fn rumqttd() -> anyhow::Result<Self> {
        let bin = rumqttd_binary().context("rumqttd is not installed (cargo install rumqttd)")?;
        let dir = tempfile::tempdir()?;
        let mqtt = free_addr()?;
        let conf = dir.path().join("rumqttd.toml");
        std::fs::write(
            &conf,
            format!(
                "id = 0\n[router]\nid = 0\nmax_connections = 20010\nmax_outgoing_packet_count = 200\n\
                 max_segment_size = 104857600\nmax_segment_count = 10\n\
                 [v4.1]\nname = \"v4-1\"\nlisten = \"{mqtt}\"\nnext_connection_delay_ms = 0\n\
                 [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 20480\n\
                 max_inflight_count = 100\ndynamic_filters = true\n"
            ),
        )?;
        let log = dir.path().join("rumqttd.log");
        let args = vec!["-c".to_owned(), conf.display().to_string()];
        Self::peer(Kind::Rumqttd, bin, args, mqtt, log, dir).await
    }

    async fn peer(
        kind: Kind,
        bin: PathBuf,
        args: Vec<String>,
        mqtt: SocketAddr,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            kind,
            pid: 0,
            mqtt,
            http: None,
            key: None,
            child: None,
            command: Some(Launch { program: bin, args, env: Vec::new() }),
            log,
            _dir: Some(dir),
        };
        server.start().await?;
        Ok(server)
    }

    /// A server someone else started (a cluster's edge, say); it is measured, never restarted.
    pub fn attach(mqtt: SocketAddr, http: Option<SocketAddr>, key: Option<String>, pid: u32) -> Self {
        Self { kind: Kind::Tether, pid, mqtt, http, key, child: None, command: None, log: PathBuf::new(), _dir: None }
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let Launch { program: bin, args, env } =
            self.command.as_ref().context("an attached server cannot be started")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited ({status}) at start; its log: {}", self.kind.name(), self.log.display());
            }
            let mqtt_up = tokio::net::TcpStream::connect(self.mqtt).await.is_ok();
            let http_up = match self.http {
                Some(http) => reqwest::get(format!("http://{http}/api/v1/openapi.json"))
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => true,
            };
            if mqtt_up && http_up {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} not ready after 30 s; its log: {}", self.kind.name(), self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again, on the same data directory and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().await
    }

    /// SIGTERM, then wait (then SIGKILL after 15 s).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            for _ in 0..150 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// rumqttd from `$RUMQTTD`, the `PATH` or `~/.cargo/bin`.
pub fn rumqttd_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("RUMQTTD").map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("rumqttd"));
    let cargo = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/rumqttd"));
    from_env.into_iter().chain(on_path).chain(cargo).find(|p| p.is_file())
}

pub fn mosquitto_binary() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
