//! The data directory and its shards: lock file, engine metadata, and one pinned glommio
//! executor per shard, each recovering and then owning `shard-<k>/`.
//!
//! ```text
//! <data dir>/
//!   LOCK            flock'd: exclusively by a writer, shared by offline readers
//!   ENGINE          format version and shard count (temp file + rename + dir fsync)
//!   shard-0/        00000000000000000001.wal, 00000000000000000001.idx, ...
//!   shard-1/
//!   quarantine/     bytes removed by recovery or repair, with manifests
//! ```

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::format::{crc32c, FORMAT_VERSION};
use crate::recovery::RecoveryReport;
use crate::storage::dma::DmaStorage;
use crate::wal::ShardWal;

pub const LOCK_FILE: &str = "LOCK";
pub const META_FILE: &str = "ENGINE";
pub const QUARANTINE_DIR: &str = "quarantine";

pub fn shard_dir(root: &Path, shard: u32) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

pub fn quarantine_dir(root: &Path) -> PathBuf {
    root.join(QUARANTINE_DIR)
}

/// Contents of the `ENGINE` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineMeta {
    pub format_version: u16,
    pub shards: u32,
}

impl EngineMeta {
    /// Encoding: text lines `format=<v>`, `shards=<n>`, then `crc32c=<hex>` over the bytes of
    /// the lines before it. Text so an operator can read it; checksummed so a torn or edited
    /// file is refused rather than misread.
    pub fn encode(&self) -> String {
        let body = format!("format={}\nshards={}\n", self.format_version, self.shards);
        format!("{body}crc32c={:08x}\n", crc32c(body.as_bytes()))
    }

    pub fn decode(text: &str) -> std::result::Result<Self, String> {
        let split = text.find("crc32c=").ok_or("no crc32c line")?;
        let (body, crc_line) = text.split_at(split);
        let stored = u32::from_str_radix(crc_line.trim_start_matches("crc32c=").trim(), 16)
            .map_err(|e| format!("bad crc32c: {e}"))?;
        if stored != crc32c(body.as_bytes()) {
            return Err("checksum mismatch".into());
        }
        let mut format_version = None;
        let mut shards = None;
        for line in body.lines() {
            match line.split_once('=') {
                Some(("format", v)) => format_version = v.parse().ok(),
                Some(("shards", v)) => shards = v.parse().ok(),
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        Ok(EngineMeta {
            format_version: format_version.ok_or("missing format")?,
            shards: shards.ok_or("missing shards")?,
        })
    }
}

/// A hold on a data directory for the life of this value: exclusive ([`lock_dir`]) for
/// anything that writes, shared ([`lock_dir_shared`]) for commands that only read.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    pub path: PathBuf,
    pub exclusive: bool,
}

impl Drop for DirLock {
    /// The exclusive holder wrote its pid for operators; clearing it on release keeps a later
    /// "locked by" message from naming a process that no longer holds the lock. Best effort:
    /// the flock, released when the file closes, is what excludes.
    fn drop(&mut self) {
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// Who holds the lock file at `lock`, for an error message: the pid the exclusive holder
/// recorded, if that process is alive, else a holder of the shared lock (a reader).
pub fn lock_holder(lock: &Path) -> String {
    let pid = std::fs::read_to_string(lock).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.trim().parse::<u32>().ok())
    });
    match pid {
        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => format!("pid {pid}"),
        _ => "a command that only reads it (shared lock)".to_string(),
    }
}

/// The outcome of [`lock_dir_shared`].
#[derive(Debug)]
pub enum SharedLock {
    Held(DirLock),
    /// No `LOCK` file exists and none can be created (read-only file system or no write
    /// permission): no process can write to the directory either, so reading is safe.
    NotTaken {
        why: std::io::Error,
    },
}

/// Takes the directory's lock shared: any number of readers at once, none while a writer
/// holds it (fails with [`Error::Locked`]). Opens `LOCK` read-only, so it works on a
/// read-only mount or a read-only copy; creates it only if missing.
pub fn lock_dir_shared(root: &Path) -> Result<SharedLock> {
    let path = root.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e)
                    if e.raw_os_error() == Some(libc::EROFS)
                        || e.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    return Ok(SharedLock::NotTaken { why: e });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(SharedLock::Held(DirLock {
            file,
            path,
            exclusive: false,
        })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: root.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Takes the directory's lock file, or fails with [`Error::Locked`] naming the holder.
pub fn lock_dir(root: &Path) -> Result<DirLock> {
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Locked {
                path: root.to_path_buf(),
                lock: path,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    // Record the holder for operators (informational; the flock is what excludes).
    file.set_len(0).map_err(|e| Error::io(&path, e))?;
    writeln!(file, "pid={}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(DirLock {
        file,
        path,
        exclusive: true,
    })
}

/// fsync of a directory from outside the shard executors (ENGINE file, import markers): the
/// one implementation for `std::fs` callers; shard code uses `Storage::sync_dir`.
pub fn sync_dir_std(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Checks (or, for a new directory, creates) the `ENGINE` file. Returns the shard count the
/// directory was created with, which wins over the configuration (placement depends on it).
pub fn open_meta(root: &Path, shards_if_new: u32, create: bool) -> Result<EngineMeta> {
    let path = root.join(META_FILE);
    // Bytes, not a string: a garbled file that is not even UTF-8 is the same damage as a
    // garbled text file, and gets the same answer.
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|e| Error::NotADataDir {
                path: root.to_path_buf(),
                why: format!(
                    "{}: not text (invalid UTF-8 at byte {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ),
            })?;
            let meta = EngineMeta::decode(&text).map_err(|why| Error::NotADataDir {
                path: root.to_path_buf(),
                why: format!("{}: {why}", path.display()),
            })?;
            if meta.format_version != FORMAT_VERSION {
                return Err(Error::NotADataDir {
                    path: root.to_path_buf(),
                    why: format!(
                        "format version {} (this build reads {FORMAT_VERSION})",
                        meta.format_version
                    ),
                });
            }
            Ok(meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let meta = EngineMeta {
                format_version: FORMAT_VERSION,
                shards: shards_if_new,
            };
            create_meta_file(&StdMetaFs, root, &meta)?;
            Ok(meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: format!("no {META_FILE} file"),
        }),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The three file-system steps that make a new `ENGINE` file durable, behind a seam so a test
/// can check them on a model that forgets what a crash would (`tests` below): a production
/// build has one implementation, [`StdMetaFs`].
trait MetaFs {
    /// Creates `path` with `bytes` and fsyncs it.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// fsyncs directory `dir` (its entries: a created or renamed name).
    fn sync_dir(&self, dir: &Path) -> Result<()>;
}

struct StdMetaFs;

impl MetaFs for StdMetaFs {
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
        f.write_all(bytes).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(|e| Error::io(to, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        sync_dir_std(dir)
    }
}

/// Writes a new `ENGINE` file: temp file, fsync, rename, fsync of the directory (without the
/// last step a power loss can forget the name even though its bytes were synced).
fn create_meta_file(fs: &impl MetaFs, root: &Path, meta: &EngineMeta) -> Result<()> {
    let tmp = root.join(format!("{META_FILE}.tmp"));
    fs.write_synced(&tmp, meta.encode().as_bytes())?;
    fs.rename(&tmp, &root.join(META_FILE))?;
    fs.sync_dir(root)
}

/// The shard directories of a data directory: shard number → whether it holds a segment.
pub fn list_shard_dirs(root: &Path) -> Result<std::collections::BTreeMap<u32, bool>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let e = e.map_err(|e| Error::io(root, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(k) = name
            .strip_prefix("shard-")
            .and_then(|k| k.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = e.path();
        let has_segment = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok())
            .any(|e| {
                crate::format::segment::parse_segment_file_name(&e.file_name().to_string_lossy())
                    .is_some()
            });
        out.insert(k, has_segment);
    }
    Ok(out)
}

/// Whether the shard directories agree with the `ENGINE` file's shard count: a wrong count
/// would place groups on the wrong shards and hide whole shards' logs. Once any shard holds a
/// segment, every shard `0..shards` has a directory (each is created when its WAL first
/// opens) and none beyond exists. Returns one message per disagreement.
pub fn shard_count_problems(
    shards: u32,
    dirs: &std::collections::BTreeMap<u32, bool>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (&k, &has_segment) in dirs.range(shards..) {
        out.push(format!(
            "ENGINE says {shards} shards, but shard-{k} exists{}",
            if has_segment {
                " and holds segments"
            } else {
                ""
            }
        ));
    }
    if dirs.values().any(|&has| has) {
        for k in (0..shards).filter(|k| !dirs.contains_key(k)) {
            out.push(format!(
                "ENGINE says {shards} shards, but shard-{k} is missing while other shards hold data"
            ));
        }
    }
    out
}

/// Groups a shard's log holds that the `ENGINE` file's shard count places elsewhere.
pub fn misplaced_groups(shard: u32, shards: u32, groups: impl Iterator<Item = u64>) -> Vec<u64> {
    groups
        .filter(|&g| crate::config::shard_for_group(g, shards) != shard)
        .collect()
}

/// Creates (if needed) and locks a data directory, returning the lock and its metadata.
pub fn prepare_data_dir(
    root: &Path,
    cfg: &EngineConfig,
    create: bool,
) -> Result<(DirLock, EngineMeta)> {
    cfg.validate()?;
    if create {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    } else if !root.is_dir() {
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: "not a directory".into(),
        });
    } else if !root.join(META_FILE).exists() {
        // Checked before locking so that no LOCK file is left in a directory that is not ours.
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: format!("no {META_FILE} file"),
        });
    }
    let lock = lock_dir(root)?;
    let meta = open_meta(root, cfg.shards, create)?;
    let problems = shard_count_problems(meta.shards, &list_shard_dirs(root)?);
    if !problems.is_empty() {
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: format!(
                "{}: {}",
                root.join(META_FILE).display(),
                problems.join("; ")
            ),
        });
    }
    Ok((lock, meta))
}

/// What a shard's task gets: its id, the shard count, its recovered WAL.
pub struct ShardContext {
    pub shard: u32,
    pub shards: u32,
    pub root: PathBuf,
    pub wal: Rc<ShardWal<DmaStorage>>,
}

impl ShardContext {
    pub fn recovery(&self) -> &RecoveryReport {
        self.wal.recovery_report()
    }
}

/// CPUs this process may run on (its `sched_getaffinity` mask), in increasing order. Shards
/// are pinned within it: under `taskset` or a cgroup cpuset, `shard % available_parallelism`
/// would name CPUs the process may not use.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| {
        Error::io(
            Path::new("/proc/self"),
            std::io::Error::other(format!("sched_getaffinity: {e}")),
        )
    })?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        return Err(Error::io(
            Path::new("/proc/self"),
            std::io::Error::other("sched_getaffinity returned an empty CPU mask"),
        ));
    }
    Ok(cpus)
}

/// Start-up rendezvous of the shards: no shard runs its task until every shard has recovered,
/// and if one fails to start or recover, the others close their WAL and stop instead.
struct StartGate {
    state: std::sync::Mutex<(u32, Option<u32>)>,
    changed: std::sync::Condvar,
    shards: u32,
}

impl StartGate {
    fn new(shards: u32) -> Self {
        StartGate {
            state: std::sync::Mutex::new((0, None)),
            changed: std::sync::Condvar::new(),
            shards,
        }
    }

    /// Records shard `shard`'s outcome; `true` once every shard recovered, `false` as soon as
    /// one failed. Blocks the shard's thread until then (start-up only: nothing else runs on it).
    fn arrive(&self, shard: u32, ok: bool) -> bool {
        // A poisoned lock means a shard thread panicked while holding it: treat as failed.
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        st.0 += 1;
        if !ok && st.1.is_none() {
            st.1 = Some(shard);
        }
        self.changed.notify_all();
        loop {
            if st.1.is_some() {
                return false;
            }
            if st.0 >= self.shards {
                return true;
            }
            st = match self.changed.wait(st) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
    }

    /// A shard that panicked before arriving counts as failed (without blocking).
    fn mark_failed(&self, shard: u32) {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        st.0 += 1;
        st.1.get_or_insert(shard);
        self.changed.notify_all();
    }

    /// Shards that will never arrive (their executor did not start) count as failed.
    fn fail_missing(&self, from_shard: u32) {
        if let Ok(mut st) = self.state.lock() {
            st.0 += self.shards - from_shard;
            st.1.get_or_insert(from_shard);
            self.changed.notify_all();
        }
    }
}

/// Opens the data directory (creating it if `create`), starts one executor per shard (pinned
/// within the process's CPU affinity mask when configured), recovers each shard's WAL on its
/// executor, and once every shard has recovered runs `task` there, closes the WAL and returns
/// every shard's result in shard order. If a shard fails to start or recover, the others stop
/// without running `task`; the lock is released only after every shard has stopped.
pub fn run_shards<F, Fut, T>(
    root: &Path,
    cfg: &EngineConfig,
    create: bool,
    task: F,
) -> Result<Vec<T>>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    // Held until every shard thread has been joined (end of this function).
    let (_lock, meta) = prepare_data_dir(root, cfg, create)?;
    let cpus = if cfg.pin_cpus {
        allowed_cpus()?
    } else {
        Vec::new()
    };
    let gate = std::sync::Arc::new(StartGate::new(meta.shards));
    let mut handles = Vec::new();
    let mut first_err = None;
    for shard in 0..meta.shards {
        let placement = if cfg.pin_cpus {
            Placement::Fixed(cpus[shard as usize % cpus.len()])
        } else {
            Placement::Unbound
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("tern-shard-{shard}"))
            .io_memory(cfg.io_memory_bytes);
        let task = task.clone();
        let wal_cfg = cfg.wal.clone();
        let shard_root = root.to_path_buf();
        let shards = meta.shards;
        let gate_in = gate.clone();
        let spawned = builder.spawn(move || async move {
            // If this shard panics before it arrives at the gate, the others must not wait
            // for it forever.
            struct Unarrived(Option<(std::sync::Arc<StartGate>, u32)>);
            impl Drop for Unarrived {
                fn drop(&mut self) {
                    if let Some((gate, shard)) = self.0.take() {
                        gate.mark_failed(shard);
                    }
                }
            }
            let mut unarrived = Unarrived(Some((gate_in.clone(), shard)));
            let root = shard_root;
            let dir = shard_dir(&root, shard);
            // Settle glommio's polled-I/O probe on a file with data first (see `probe_iopoll`).
            let opened = match async {
                crate::storage::dma::probe_iopoll(&root, shard).await?;
                ShardWal::open(DmaStorage, shard, &dir, &quarantine_dir(&root), wal_cfg).await
            }
            .await
            {
                Ok(wal) => {
                    let wal = Rc::new(wal);
                    let misplaced =
                        misplaced_groups(shard, shards, wal.groups().iter().map(|g| g.group));
                    match misplaced.first() {
                        None => Ok(wal),
                        Some(g) => {
                            let _ = wal.close().await;
                            Err(Error::NotADataDir {
                                path: root.clone(),
                                why: format!(
                                    "shard-{shard} holds group {g} (and {} more) that ENGINE's {shards} shards place on shard {}: wrong shard count in ENGINE",
                                    misplaced.len() - 1,
                                    crate::config::shard_for_group(*g, shards)
                                ),
                            })
                        }
                    }
                }
                Err(e) => Err(e),
            };
            unarrived.0 = None;
            let all_started = gate_in.arrive(shard, opened.is_ok());
            let wal = match (opened, all_started) {
                (Err(e), _) => return Err(Some(e)),
                (Ok(wal), false) => {
                    // Another shard failed: stop without running the task.
                    wal.close().await.map_err(Some)?;
                    return Err(None);
                }
                (Ok(wal), true) => wal,
            };
            let out = task(ShardContext {
                shard,
                shards,
                root: root.clone(),
                wal: wal.clone(),
            })
            .await;
            // Everything the task queued becomes durable (or fails) before the shard ends.
            wal.close().await.map_err(Some)?;
            Ok::<T, Option<Error>>(out)
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                first_err = Some(Error::io(
                    root,
                    std::io::Error::other(format!("starting shard {shard}: {e}")),
                ));
                gate.fail_missing(shard);
                break;
            }
        }
    }
    let mut out = Vec::new();
    for (shard, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            // Stopped because another shard failed: that shard's error is the one to report.
            Ok(Err(None)) => {}
            Ok(Err(Some(e))) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::io(
                    root,
                    std::io::Error::other(format!("shard {shard} executor failed: {e}")),
                ));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.len() == meta.shards as usize => Ok(out),
        None => Err(Error::io(
            root,
            std::io::Error::other("a shard stopped at start-up without an error"),
        )),
    }
}

#[cfg(test)]
mod meta_durability_tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// A directory as a power loss leaves it: file contents are durable once written and
    /// synced, names only once their directory was fsynced after the change (as the simulated
    /// disk of `storage::sim` models it for the WAL's files).
    #[derive(Default)]
    struct CrashModel {
        /// Names as the running process sees them -> contents.
        live: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
        /// Names that survive a power loss -> contents.
        durable: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    }

    impl MetaFs for CrashModel {
        fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<()> {
            self.live
                .borrow_mut()
                .insert(path.to_path_buf(), bytes.to_vec());
            Ok(())
        }

        fn rename(&self, from: &Path, to: &Path) -> Result<()> {
            let mut live = self.live.borrow_mut();
            let bytes = live.remove(from).expect("renamed file exists");
            live.insert(to.to_path_buf(), bytes);
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> Result<()> {
            let live = self.live.borrow();
            let mut durable = self.durable.borrow_mut();
            durable.retain(|p, _| p.parent() != Some(dir));
            for (p, b) in live.iter().filter(|(p, _)| p.parent() == Some(dir)) {
                durable.insert(p.clone(), b.clone());
            }
            Ok(())
        }
    }

    /// Ra PR #589, "sync parent directory after creating config file": a power loss right
    /// after `ENGINE` was created must not lose it. Fails if `create_meta_file` skips the
    /// directory fsync (the name would exist only in the live view).
    #[test]
    fn engine_file_survives_a_power_loss_right_after_its_creation() {
        let fs = CrashModel::default();
        let root = Path::new("/data");
        let meta = EngineMeta {
            format_version: FORMAT_VERSION,
            shards: 3,
        };
        create_meta_file(&fs, root, &meta).expect("create");
        let after_crash = fs.durable.borrow();
        let bytes = after_crash
            .get(&root.join(META_FILE))
            .expect("ENGINE survives the power loss");
        let text = std::str::from_utf8(bytes).expect("text");
        assert_eq!(EngineMeta::decode(text), Ok(meta));
        assert!(
            !after_crash.contains_key(&root.join(format!("{META_FILE}.tmp"))),
            "no temp name left behind"
        );
    }
}
