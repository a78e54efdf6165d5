//! What the system under test costs, read from `/proc` (BENCHMARKS.md: CPU time per message or
//! connect, RSS delta per connection).

use std::time::Duration;

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux/x86_64).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of `pid` so far (kernel network work billed to it included).
pub fn cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short /proc stat")?.parse()?) };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// Resident set size of `pid` in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("no process {pid}"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time and RSS of one process between two instants.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu: Duration,
    pub rss: u64,
}

impl Sample {
    pub fn take(pid: u32) -> anyhow::Result<Self> {
        Ok(Self { cpu: cpu(pid)?, rss: rss(pid)? })
    }
}

/// The kernel's count of connections dropped at a full listen queue (`TcpExt ListenDrops`,
/// machine-wide: loopback only here, so it is the server's).
pub fn listen_drops() -> u64 {
    let Ok(netstat) = std::fs::read_to_string("/proc/net/netstat") else { return 0 };
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenDrops")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}
