//! Test support shared by crate tests and scenario tests: real `nats-server -js` and
//! `redis-server` processes on free ports, which a test can kill and restart.

mod process;

use std::path::PathBuf;

pub use process::{Nats, NatsServer, Redis, RedisServer, ServerKind, TestServer};

/// A free TCP port on 127.0.0.1 for a server the test starts later.
///
/// Picked at random below the kernel's ephemeral range (32768 and up): a port the kernel handed
/// out with `bind(0)` can be taken by any outgoing connection before the server binds it, which
/// made servers fail to start under load. Checked free at the time of the call.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    for _ in 0..1000 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let mixed = (u64::from(nanos) ^ pid.rotate_left(17) ^ SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed))
            .wrapping_mul(0x2545_F491_4F6C_DD1D);
        let port = 20_000 + u16::try_from(mixed % 12_000).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// The workspace root (where `make deps` puts `.venv/bin/nats-server`).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}
