//! Real process crashes: a child process appends under load to a real data directory (glommio
//! DMA files, O_DIRECT, fdatasync) and is killed with SIGKILL at random moments. After each
//! kill the parent reopens the directory and checks that every append the child logged as
//! acknowledged is present with exactly the bytes written, and that nothing else read back was
//! invented. The child logs an append (one `write(2)` per line to `acks.log`, which a process
//! kill cannot lose) only after the append's future resolved Ok. While the child runs, the
//! parent checks that the lock file keeps it off the directory.
//!
//! The child is this test binary re-executed with `TERN_SIGKILL_CHILD=<dir>`, running the
//! ignored test `sigkill_child` (which does nothing without that variable). Every other child
//! writes its batches with `O_DSYNC` instead of write + fdatasync (`WalSync::Dsync`).
//!
//! Environment: `TERN_SIGKILL_ITERS=<n>` kills (default 20); `TERN_SIGKILL_SEED=<n>` (default 1)
//! picks the kill moments.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::entry_data;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::engine::{lock_dir, run_shards};
use tern_engine::{EngineConfig, Entry, Error, WalConfig, WalSync};

const GROUPS: u64 = 4;
/// Appends each group keeps in flight.
const INFLIGHT: usize = 4;
/// The child stops by itself after this long, in case the parent is gone.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(8);

/// The child's WAL sync mode, from `TERN_SIGKILL_SYNC` (the parent alternates it: the mode
/// is not part of the on-disk format, so one directory sees both).
fn child_sync() -> WalSync {
    std::env::var("TERN_SIGKILL_SYNC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn config() -> EngineConfig {
    EngineConfig {
        shards: 1,
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig {
            segment_bytes: 4 << 20,
            batch_bytes_max: 512 << 10,
            pending_bytes_max: 2 << 20,
            sync: child_sync(),
            ..WalConfig::default()
        },
    }
}

fn data_dir(base: &Path) -> PathBuf {
    base.join("data")
}

fn ack_log(base: &Path) -> PathBuf {
    base.join("acks.log")
}

/// The child half: appends to every group until killed (or `CHILD_LIFETIME_MAX`).
#[test]
#[ignore = "child process of kill_minus_nine_under_load; does nothing when run directly"]
fn sigkill_child() {
    let Ok(base) = std::env::var("TERN_SIGKILL_CHILD") else {
        return;
    };
    let base = PathBuf::from(base);
    let acks = ack_log(&base);
    run_shards(&data_dir(&base), &config(), true, move |ctx| {
        let acks = acks.clone();
        async move {
            let log = Rc::new(RefCell::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&acks)
                    .expect("ack log"),
            ));
            let deadline = Instant::now() + CHILD_LIFETIME_MAX;
            let mut tasks = Vec::new();
            for g in 1..=GROUPS {
                let wal = ctx.wal.clone();
                let log = log.clone();
                tasks.push(glommio::spawn_local(async move {
                    let mut next = wal.group(g).map_or(1, |i| i.last_index + 1);
                    let mut inflight = std::collections::VecDeque::new();
                    while Instant::now() < deadline {
                        let count = 1 + next % 3;
                        let datas: Vec<Vec<u8>> =
                            (next..next + count).map(|i| entry_data(g, i, 1)).collect();
                        let entries: Vec<Entry<'_>> = datas
                            .iter()
                            .enumerate()
                            .map(|(k, d)| Entry {
                                kind: tern_engine::EntryKind::Normal,
                                term: 1,
                                index: next + k as u64,
                                data: d,
                            })
                            .collect();
                        let rx = wal.enqueue_append(g, &entries).await.expect("enqueue");
                        inflight.push_back((next, count, rx));
                        next += count;
                        if inflight.len() >= INFLIGHT {
                            let (first, count, rx) = inflight.pop_front().unwrap();
                            rx.await.expect("append");
                            // Logged only now that the append is durable.
                            let line = format!("{g} {first} {count}\n");
                            log.borrow_mut()
                                .write_all(line.as_bytes())
                                .expect("ack log");
                        }
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        }
    })
    .expect("child engine");
}

/// Acknowledged appends as logged by the children: group -> index -> seen.
fn read_acks(base: &Path) -> BTreeMap<u64, Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(ack_log(base)).unwrap_or_default();
    let mut out: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    // A line cut by the kill (no newline) was never complete: skip it.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for line in complete.lines() {
        let v: Vec<u64> = line
            .split(' ')
            .map(|x| x.parse().expect("ack line"))
            .collect();
        out.entry(v[0]).or_default().push((v[1], v[2]));
    }
    out
}

/// Opens the directory in this process and checks every acknowledged entry, and every entry
/// read back, byte for byte. Returns how many acknowledged entries were checked.
fn verify(base: &Path) -> Result<u64, String> {
    let acks = read_acks(base);
    let results = run_shards(&data_dir(base), &config(), false, move |ctx| {
        let acks = acks.clone();
        async move {
            let mut checked = 0u64;
            for (g, appends) in &acks {
                let info = ctx
                    .wal
                    .group(*g)
                    .ok_or_else(|| format!("group {g} with acknowledged appends is gone"))?;
                let entries = ctx
                    .wal
                    .read(*g, info.first_index, info.last_index + 1, u64::MAX)
                    .await
                    .map_err(|e| format!("read group {g}: {e}"))?;
                for e in &entries {
                    if e.term != 1 || e.data != entry_data(*g, e.index, 1) {
                        return Err(format!("group {g} index {}: bytes differ", e.index));
                    }
                }
                for (first, count) in appends {
                    for i in *first..first + count {
                        if i < info.first_index || i > info.last_index {
                            return Err(format!(
                                "acknowledged entry {g}/{i} missing (log is {}..={}); recovery: {:?}",
                                info.first_index,
                                info.last_index,
                                ctx.recovery()
                            ));
                        }
                        checked += 1;
                    }
                }
            }
            Ok::<u64, String>(checked)
        }
    })
    .map_err(|e| format!("reopen: {e}"))?;
    results.into_iter().next().unwrap()
}

fn ack_bytes(base: &Path) -> u64 {
    std::fs::metadata(ack_log(base)).map_or(0, |m| m.len())
}

#[test]
fn kill_minus_nine_under_load() {
    let iters: u64 = std::env::var("TERN_SIGKILL_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TERN_SIGKILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut killed = 0;
    let mut checked = 0;
    for it in 0..iters {
        let before = ack_bytes(&base);
        let mut child = Command::new(&exe)
            .args([
                "sigkill_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TERN_SIGKILL_CHILD", &base)
            // Every other child writes its batches through O_DSYNC (WalSync::Dsync).
            .env(
                "TERN_SIGKILL_SYNC",
                if it % 2 == 1 { "dsync" } else { "fdatasync" },
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        // Most kills land while appends are being acknowledged; every fourth lands early
        // (start-up, recovery, the first appends).
        let early = it % 4 == 3;
        if !early {
            let wait_until = Instant::now() + Duration::from_secs(20);
            while ack_bytes(&base) == before {
                if Instant::now() > wait_until || child.try_wait().unwrap().is_some() {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("iteration {it}: child made no progress; its stderr:\n{err}");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if it == 0 {
                // The running child holds the lock: a second opener is refused.
                match lock_dir(&data_dir(&base)) {
                    Err(Error::Locked { .. }) => {}
                    other => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("lock taken while the child runs: {other:?}");
                    }
                }
            }
        }
        let delay = if early {
            rng.gen_range(0..60)
        } else {
            rng.gen_range(10..200)
        };
        std::thread::sleep(Duration::from_millis(delay));
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet (so the pid is not
        // reused).
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed");
        let status = child.wait().expect("reap child");
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc::SIGKILL) {
            killed += 1;
        } else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("iteration {it}: child was not killed but exited ({status}):\n{err}");
        }
        if !data_dir(&base).join("ENGINE").exists() {
            // Killed before the directory was even created: nothing to check yet.
            continue;
        }
        match verify(&base) {
            Ok(n) => checked = n,
            Err(e) => panic!("iteration {it} (seed {seed}, killed after {delay} ms): {e}"),
        }
    }
    eprintln!(
        "{killed} kills, {checked} acknowledged entries verified, {:?}",
        started.elapsed()
    );
    assert!(killed >= iters, "only {killed} kills");
    assert!(
        checked >= 100,
        "only {checked} acknowledged entries: not under load"
    );
    // Once the children are gone, the lock is free again.
    drop(lock_dir(&data_dir(&base)).expect("lock after the last kill"));
}
