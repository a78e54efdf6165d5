//! Test support shared by crate tests and scenario tests: real `nats-server -js` and
//! `redis-server` processes on free ports, which a test can kill and restart.

mod process;

use std::path::PathBuf;

pub use process::{NatsServer, RedisServer};

/// A free TCP port on 127.0.0.1 (the listener is closed again before returning).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The workspace root (where `make deps` puts `.venv/bin/nats-server`).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}
