//! Runs every `sh` block of docs/operations/node-recovery.md and then of
//! docs/operations/cluster.md, in order, against one real 3-node cluster driven by
//! scripts/cluster.sh (node i on 127.0.0.i, ports shifted by the cluster's own offset, its
//! directory under a tempdir), checking each command's exit code against its `# exit N`.
//! Blocks marked `<!-- runbook-test: pending WHAT -->` use a command being built elsewhere:
//! they are skipped, and the reason is printed. The documents' conventions sections describe
//! the contract. Every process started, by cluster.sh or by a block (the standalone restore),
//! is stopped when the test ends, also when it fails. `TERN_RUNBOOK_VERBOSE=1` prints what
//! every block printed.

mod common;
mod serve_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::runbook_doc::{parse, Block};
use serve_support::cluster::Cluster;

const NODE_RECOVERY: &str = include_str!("../docs/operations/node-recovery.md");
const CLUSTER: &str = include_str!("../docs/operations/cluster.md");

/// What may be pending, and why: commands other helpers are building. A marker naming
/// anything else fails the test, so the skipped blocks stay few and known.
const PENDING: &[(&str, &str)] = &[];

/// Bound on one block (it runs several bounded waits of up to a few minutes each).
const BLOCK_SECS: u32 = 900;

/// Kills (SIGKILL) every `tern serve` whose command line names `needle` (the restore
/// directory of section 8), when dropped: the cluster's own guard only knows its nodes.
struct ServeGuard {
    needle: String,
}

impl ServeGuard {
    fn pids(&self) -> Vec<u32> {
        serve_support::cluster::serve_pids(&self.needle)
    }
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Raw stderr, not the captured `eprintln!`: a skipped block is reported even when the test
/// passes.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One bash script for the block: each command, then a check of its exit code (the script
/// ends with 99 at the first mismatch, naming the line). Variables set by one line are seen by
/// the next, as when an operator pastes the block.
fn script_of(block: &Block) -> String {
    let mut s = String::from("exec 2>&1\n");
    for (line, cmd, want) in &block.commands {
        s.push_str(&format!(
            "echo {}\n{cmd}\n__rc=$?\nif [ \"$__rc\" -ne {want} ]; then echo \"runbook: line {line}: exit $__rc, the document says {want}\"; exit 99; fi\n",
            shell_quote(&format!("+ [line {line}] {cmd}"))
        ));
    }
    s
}

fn check_coverage(all: &str) {
    for needle in [
        "cluster.sh start",
        "cluster.sh kill",
        "cluster.sh stop",
        "tern raft-info",
        "tern cluster-status",
        "tern cluster transfer-leader",
        "tern cluster remove-node",
        "tern cluster add-node",
        "tern export-topic",
        "tern import-topic",
        "tern verify-data",
        "tern serve --standalone",
        "--log-format json",
        "grep -E \"(recovery|replay|caught_up)\"",
        "/health",
        "/ready",
        "/metrics",
        "/admin/snapshot",
        "snapshot_transfer",
        "tern_raft_leader_commit_index",
        "read_only = true",
        "kcat",
        "# exit 4",
    ] {
        assert!(
            all.contains(needle),
            "the online runbooks never run `{needle}`"
        );
    }
}

#[test]
fn every_command_of_the_online_runbooks_runs_as_documented() {
    let docs = [
        ("docs/operations/node-recovery.md", parse(NODE_RECOVERY)),
        ("docs/operations/cluster.md", parse(CLUSTER)),
    ];
    let all: String = docs
        .iter()
        .flat_map(|(_, blocks)| blocks.iter())
        .flat_map(|b| {
            b.commands
                .iter()
                .map(|c| format!("{} # exit {}\n", c.1, c.2))
        })
        .collect();
    check_coverage(&all);
    for tool in ["bash", "curl", "jq", "kcat", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "the online runbooks use `{tool}`: install it (Debian: apt-get install {tool})"
        );
    }

    let c = Cluster::new(3);
    let dir = c.dir().to_path_buf();
    let restore = dir.join("restore");
    let _restore_guard = ServeGuard {
        needle: restore.display().to_string(),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir: PathBuf = Path::new(serve_support::TERN)
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        root.join("scripts").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let offset = c.port_offset();
    let mut env: Vec<(String, String)> = c
        .script_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("PATH".into(), path));
    for n in 1..=3u32 {
        env.push((format!("H{n}"), format!("127.0.0.{n}:{}", 9090 + offset)));
        env.push((format!("K{n}"), format!("127.0.0.{n}:{}", 9092 + offset)));
        env.push((format!("P{n}"), format!("127.0.0.{n}:{}", 9093 + offset)));
        env.push((format!("DATA{n}"), c.data(n).display().to_string()));
        env.push((
            format!("LOG{n}"),
            dir.join(format!("node-{n}.log")).display().to_string(),
        ));
    }
    env.push(("BACKUP".into(), dir.join("backup").display().to_string()));
    env.push(("RESTORE".into(), restore.display().to_string()));

    let started = Instant::now();
    let (mut ran, mut skipped) = (0, 0);
    for (doc, blocks) in &docs {
        assert!(blocks.len() >= 8, "{doc}: expected its blocks");
        for b in blocks {
            if let Some(directive) = &b.setup {
                let what = directive.strip_prefix("pending ").unwrap_or_else(|| {
                    panic!("{doc} line {}: unknown directive {directive:?}", b.line)
                });
                let (_, why) = PENDING
                    .iter()
                    .find(|(name, _)| *name == what)
                    .unwrap_or_else(|| panic!("{doc} line {}: unknown pending {what:?}", b.line));
                say(&format!(
                    "online_runbook: SKIPPED {doc} block at line {} ({} commands): {why}; remove its `<!-- runbook-test: pending {what} -->` once it is",
                    b.line,
                    b.commands.len()
                ));
                skipped += 1;
                continue;
            }
            let t = Instant::now();
            let out = Command::new("timeout")
                .args(["--kill-after=10", &BLOCK_SECS.to_string(), "bash", "-c"])
                .arg(script_of(b))
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(&dir)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run bash");
            let code = out.status.code().unwrap_or(-1);
            let text = String::from_utf8_lossy(&out.stdout);
            match code {
                0 => {}
                99 => panic!("{doc}, block at line {}:\n{text}", b.line),
                124 | 137 => panic!(
                    "{doc}, block at line {}: still running after {BLOCK_SECS} s\n{text}",
                    b.line
                ),
                _ => panic!(
                    "{doc}, block at line {}: the shell ended with {code} before its checks\n{text}",
                    b.line
                ),
            }
            if std::env::var_os("TERN_RUNBOOK_VERBOSE").is_some() {
                say(&text);
            }
            eprintln!(
                "{doc} block at line {}: {} commands, {:.1} s",
                b.line,
                b.commands.len(),
                t.elapsed().as_secs_f64()
            );
            ran += 1;
        }
    }
    say(&format!(
        "online_runbook: {ran} blocks run, {skipped} pending, {:.0} s",
        started.elapsed().as_secs_f64()
    ));
}
