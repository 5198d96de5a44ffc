//! Behaviour scripts in `testdata/*.txt`. Each block is a command, a `----` line and the
//! expected trace, ended by a blank line; each file opens with `#` lines saying what it
//! checks. `UPDATE_TESTDATA=1 cargo test -p tern-raft --test datadriven` rewrites the
//! expected traces (review the diff before committing it).
//!
//! Commands: `add-nodes N [voters=1,2] [pre-vote=false] [check-quorum=false]
//! [append-bytes=N] [inflight=N] [chunk=N]`, `campaign ID`, `tick ID [N]`,
//! `propose ID DATA`, `conf-change ID voters=.. [learners=..]`, `transfer-leader ID TO`,
//! `read-index ID CTX`, `process-ready`, `deliver`, `stabilize`, `partition 1 2 | 3`,
//! `heal`, `crash ID`, `restart ID`, `manual-persist ID`, `persist ID`, `compact ID INDEX
//! [size=N]`, `slow-disk ID tail=N` (only the newest N entries readable until fetched),
//! `fetch` (complete the entry reads asked for), `status`, `log ID`.

mod harness;

use std::fmt::Write;

use harness::{Cluster, NodeOpts};
use tern_raft::{ConfChange, NodeId};

fn ids(s: &str) -> Vec<NodeId> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("node id"))
        .collect()
}

fn run_command(c: &mut Cluster, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| -> u64 {
        words[i]
            .parse()
            .unwrap_or_else(|_| panic!("bad number in {line}"))
    };
    let kv = |key: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
    };
    c.out.clear();
    match words[0] {
        "add-nodes" => {
            let mut opts = NodeOpts {
                pre_vote: kv("pre-vote") != Some("false"),
                check_quorum: kv("check-quorum") != Some("false"),
                ..NodeOpts::default()
            };
            if let Some(v) = kv("append-bytes") {
                opts.append_bytes_max = v.parse().expect("number");
            }
            if let Some(v) = kv("inflight") {
                opts.inflight_msgs_max = v.parse().expect("number");
            }
            if let Some(v) = kv("chunk") {
                opts.snapshot_chunk_bytes = v.parse().expect("number");
            }
            c.add_nodes(arg(1), kv("voters").map(ids), &opts);
            return c.status();
        }
        "campaign" => c.raft_mut(arg(1)).campaign(),
        "tick" => {
            let n = if words.len() > 2 { arg(2) } else { 1 };
            c.tick(arg(1), n);
        }
        "propose" => {
            let r = c.raft_mut(arg(1)).propose(words[2].as_bytes().to_vec());
            return match r {
                Ok((t, i)) => format!("ok {t}/{i}\n"),
                Err(e) => format!("error: {e}\n"),
            };
        }
        "conf-change" => {
            let change = ConfChange {
                voters: kv("voters").map(ids).unwrap_or_default(),
                learners: kv("learners").map(ids).unwrap_or_default(),
            };
            return c.conf_change(arg(1), &change);
        }
        "transfer-leader" => {
            if let Err(e) = c.raft_mut(arg(1)).transfer_leader(arg(2)) {
                return format!("error: {e}\n");
            }
        }
        "read-index" => {
            if let Err(e) = c.raft_mut(arg(1)).read_index(arg(2)) {
                return format!("error: {e}\n");
            }
        }
        "process-ready" => {
            c.process_ready();
        }
        "deliver" => {
            c.deliver();
        }
        "stabilize" => c.stabilize(),
        "partition" => {
            let groups: Vec<Vec<NodeId>> = line["partition".len()..]
                .split('|')
                .map(|g| {
                    g.split_whitespace()
                        .map(|x| x.parse().expect("node id"))
                        .collect()
                })
                .collect();
            c.partition(&groups);
        }
        "heal" => c.blocked.clear(),
        "crash" => c.crash(arg(1)),
        "restart" => c.restart(arg(1)),
        "manual-persist" => c.nodes.get_mut(&arg(1)).expect("node").manual_persist = true,
        "persist" => c.persist(arg(1)),
        "compact" => {
            let size = kv("size").map(|v| v.parse().expect("number")).unwrap_or(0);
            c.compact(arg(1), arg(2), size);
        }
        "slow-disk" => {
            let tail = kv("tail").map(|v| v.parse().expect("number")).unwrap_or(0);
            let disk = &c.nodes.get(&arg(1)).expect("node").disk;
            disk.borrow_mut().slow_disk = Some(tern_raft::SlowDisk::new(tail, 8));
        }
        "fetch" => {
            for (id, f) in c.fetches.clone() {
                let _ = writeln!(c.out, "{id} fetched [{}, {})", f.low, f.high);
            }
            c.complete_fetches();
        }
        "status" => return c.status(),
        "log" => return c.log(arg(1)),
        other => panic!("unknown command {other}"),
    }
    std::mem::take(&mut c.out)
}

fn run_file(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).expect("read testdata");
    let update = std::env::var("UPDATE_TESTDATA").is_ok_and(|v| v == "1");
    assert!(
        text.starts_with('#'),
        "{}: must open with a # line saying what it checks",
        path.display()
    );
    let mut cluster = Cluster::default();
    let mut rewritten = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut failures = Vec::new();
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with('#') || line.trim().is_empty() {
            rewritten.push_str(line);
            rewritten.push('\n');
            i += 1;
            continue;
        }
        assert_eq!(
            lines.get(i + 1).copied(),
            Some("----"),
            "{}:{}: command without ----",
            path.display(),
            i + 1
        );
        let mut expected = String::new();
        let mut j = i + 2;
        while j < lines.len() && !lines[j].is_empty() {
            expected.push_str(lines[j]);
            expected.push('\n');
            j += 1;
        }
        let actual = run_command(&mut cluster, line);
        if actual != expected {
            failures.push(format!(
                "{}:{}: {line}\n--- expected\n{expected}--- actual\n{actual}",
                path.display(),
                i + 1
            ));
        }
        rewritten.push_str(line);
        rewritten.push_str("\n----\n");
        rewritten.push_str(&actual);
        rewritten.push('\n');
        i = j + 1;
    }
    if update {
        std::fs::write(path, rewritten.trim_end().to_string() + "\n").expect("rewrite testdata");
    } else {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn testdata_scripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for p in paths {
        run_file(&p);
    }
}
