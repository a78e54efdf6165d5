//! One scenario run's record: a summary line per measured thing on stdout, and a JSON result
//! under `load/results/` with the load average, commit and command line (BENCHMARKS.md).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::procfs;
use crate::protocol::unix_ns;

pub struct Record {
    scenario: &'static str,
    smoke: bool,
    params: Value,
    load_before: String,
    started_unix_s: u64,
    results: Map<String, Value>,
    lines: Vec<String>,
}

impl Record {
    pub fn new(scenario: &'static str, smoke: bool, params: Value) -> Self {
        Self {
            scenario,
            smoke,
            params,
            load_before: procfs::load_average(),
            started_unix_s: unix_ns() / 1_000_000_000,
            results: Map::new(),
            lines: Vec::new(),
        }
    }

    /// Figures of one server (`tether`, `mosquitto`) in one phase (`qos1`, `storm`, ...).
    pub fn figures(&mut self, key: &str, figures: Value) {
        self.results.insert(key.to_owned(), figures);
    }

    /// A figure recorded earlier, for ratios.
    pub fn figure(&self, key: &str, name: &str) -> Option<f64> {
        self.results.get(key)?.get(name)?.as_f64()
    }

    pub fn line(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }

    /// Writes the JSON result; returns its path.
    pub fn write(self, out_dir: &Path, targets: Value) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out_dir)?;
        let suffix = if self.smoke { "-smoke" } else { "" };
        let path = out_dir.join(format!("{}{suffix}-{}.json", self.scenario, self.started_unix_s));
        let record = json!({
            "scenario": self.scenario,
            "smoke": self.smoke,
            "commit": commit(),
            "commandLine": std::env::args().collect::<Vec<_>>().join(" "),
            "startedAtUnix": self.started_unix_s,
            "loadAverage": {"before": self.load_before, "after": procfs::load_average()},
            "params": self.params,
            "results": self.results,
            "summary": self.lines,
            "targets": targets,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")?;
        Ok(path)
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// `a / b` as "3.2×", or "n/a".
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}×", a / b),
        _ => "n/a".to_owned(),
    }
}
