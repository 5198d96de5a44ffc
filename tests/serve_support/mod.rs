//! Helpers for tests that run `tern serve` as a real process: a guard that always stops
//! what it started (SIGKILL on drop, also when the test fails), bounded waits on the log.
#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// A `tern serve` child whose stderr goes to a log file.
pub struct ServeProcess {
    child: Child,
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts `tern serve ARGS`, logging to `log` (appended). Listeners not named in `args`
    /// go to a loopback address of this start's own (127.<pid>.<n>), so tests running at
    /// once, and a node a developer runs on 127.0.0.1, never share a port.
    pub fn start(args: &[&str], log: &Path) -> ServeProcess {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 250 + 1;
        let ip = format!("127.{}.{}.{}", 1 + std::process::id() % 250, n, 1);
        let mut own: Vec<String> = Vec::new();
        for (flag, port) in [
            ("--peer-addr", 9093),
            ("--kafka-addr", 9092),
            ("--http-addr", 9090),
        ] {
            if !args.contains(&flag) {
                own.push(flag.to_string());
                own.push(format!("{ip}:{port}"));
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let child = Command::new(TERN)
            .arg("serve")
            .args(args)
            .args(&own)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn tern serve");
        ServeProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log has `count` lines containing `word`; panics with the
    /// log if the process exits first or the time runs out.
    pub fn wait_for(&mut self, word: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.matches(word).count() >= count {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("tern serve exited ({status}) before logging {word:?}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "no {word:?} after {timeout:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tern serve still running after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `tern ARGS` to completion: (exit code, stdout + stderr).
pub fn tern(args: &[&str]) -> (i32, String) {
    let out = Command::new(TERN).args(args).output().expect("run tern");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
