//! A 3-node loopback cluster driven through `scripts/cluster.sh` (node i on 127.0.0.i, its
//! data, log and pid file under one cluster directory), for `tern-bench recovery --cluster`.
//!
//! The guard stops every node on drop (`cluster.sh stop`: SIGTERM, bounded, then SIGKILL), so
//! an error or a panic in the benchmark leaves no process behind. Nodes log JSON
//! (`--log-format json`) so their own phase times are read as fields, not scraped from text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::error::{BenchError, Result};

/// Bound of one HTTP probe (connect, write, read).
const HTTP_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Cluster {
    script: PathBuf,
    bin: PathBuf,
    dir: PathBuf,
    port_offset: u32,
    /// cluster.sh's bound on a node logging `caught_up` at start (TERN_CLUSTER_START_SECS).
    start_secs: u64,
    pub nodes: u32,
    /// `tern serve` flags every start gets (e.g. `--config FILE`).
    pub serve_args: String,
}

impl Cluster {
    pub fn new(
        script: PathBuf,
        bin: PathBuf,
        dir: PathBuf,
        port_offset: u32,
        start_secs: u64,
    ) -> Cluster {
        Cluster {
            script,
            bin,
            dir,
            port_offset,
            start_secs,
            nodes: 3,
            serve_args: String::new(),
        }
    }

    fn command(&self, args: &[&str], serve_args: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("TERN_CLUSTER_DIR", &self.dir)
            .env("TERN_BIN", &self.bin)
            .env("TERN_CLUSTER_NODES", self.nodes.to_string())
            .env("TERN_CLUSTER_PORT_OFFSET", self.port_offset.to_string())
            .env("TERN_CLUSTER_START_SECS", self.start_secs.to_string())
            .env(
                "TERN_SERVE_ARGS",
                format!("--log-format json {} {serve_args}", self.serve_args),
            )
            .stdin(Stdio::null());
        c
    }

    /// Runs `cluster.sh ARGS` to its end; a non-zero exit is an error carrying its output.
    pub fn script(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args, "")
            .output()
            .map_err(|e| BenchError::io(&self.script, e))?;
        script_result(args, out)
    }

    /// Starts `cluster.sh start N` with extra `tern serve` flags and returns without waiting
    /// (the caller times the node from outside while the script waits for it).
    pub fn spawn_start(&self, node: u32, serve_args: &str) -> Result<Child> {
        self.command(&["start", &node.to_string()], serve_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::io(&self.script, e))
    }

    pub fn data(&self, node: u32) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    pub fn log(&self, node: u32) -> PathBuf {
        self.dir.join(format!("node-{node}.log"))
    }

    /// The pid in node N's pid file, if the file exists and holds one.
    pub fn pid(&self, node: u32) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join(format!("node-{node}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    pub fn kafka_addr(&self, node: u32) -> String {
        format!("127.0.0.{node}:{}", 9092 + self.port_offset)
    }

    pub fn http_addr(&self, node: u32) -> String {
        format!("127.0.0.{node}:{}", 9090 + self.port_offset)
    }

    /// Runs `tern ARGS` (the node binary's offline commands) and returns its output.
    pub fn tern(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BenchError::io(&self.bin, e))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort on the way out: cluster.sh stop escalates to SIGKILL by itself, and
        // signals only pids whose command line is this cluster's `tern serve`.
        let _ = self.command(&["stop"], "").output();
    }
}

fn script_result(args: &[&str], out: Output) -> Result<String> {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(BenchError::Cluster(format!(
            "cluster.sh {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        )))
    }
}

/// Waits for a `spawn_start` child and turns its exit into a result.
pub fn finish_start(child: Child, node: u32) -> Result<String> {
    let out = child
        .wait_with_output()
        .map_err(|e| BenchError::io("cluster.sh", e))?;
    script_result(&["start", &node.to_string()], out)
}

/// `GET path` on `addr`: the HTTP status code and body, or None when the node does not answer
/// (not listening yet, or slower than HTTP_TIMEOUT).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// One Prometheus sample's value from a `/metrics` body: the first line whose name (and
/// label set, if given, as written between the braces) matches.
pub fn metric(body: &str, name: &str, labels: Option<&str>) -> Option<f64> {
    body.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let matches = match labels {
            Some(l) => series == format!("{name}{{{l}}}"),
            None => series == name,
        };
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// One JSON log event: its message, its fields, and its time of day in ms (UTC) if it has one.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub message: String,
    pub fields: Value,
    pub at_ms: Option<f64>,
}

/// The time of day of an RFC 3339 UTC timestamp (`2026-11-25T06:26:13.346123Z`), ms.
fn time_of_day_ms(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(((h * 60.0 + m) * 60.0 + s) * 1e3)
}

/// Milliseconds from `from` to `to` (times of day), across at most one midnight.
pub fn ms_between(from: f64, to: f64) -> f64 {
    let d = to - from;
    if d < 0.0 {
        d + 86_400_000.0
    } else {
        d
    }
}

/// The JSON log events of a node log from byte `from` on. Lines that are not JSON
/// (cluster.sh's own `===` markers) are skipped.
pub fn log_events(log: &Path, from: u64) -> Result<Vec<LogEvent>> {
    let raw = std::fs::read(log).map_err(|e| BenchError::io(log, e))?;
    let tail = raw.get(from as usize..).unwrap_or_default();
    let text = String::from_utf8_lossy(tail);
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            // tracing-subscriber's JSON puts the event's fields under "fields".
            let at_ms = v
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(time_of_day_ms);
            let fields = v.get("fields").cloned().unwrap_or(v);
            let message = fields.get("message")?.as_str()?.to_string();
            Some(LogEvent {
                message,
                fields,
                at_ms,
            })
        })
        .collect())
}

/// The size of a file now (0 if it does not exist yet).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
