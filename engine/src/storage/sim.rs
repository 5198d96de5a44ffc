//! In-memory simulated disk for crash, corruption and property tests.
//!
//! [`SimStorage`] implements [`Storage`] with the weakest durability the contract in
//! [`super`] allows, so that a test can make every promise the engine relies on fail in turn:
//!
//! - **Two copies of the truth.** Every file has its *current* content (what reads see) and its
//!   *durable* content (what survives a crash). A write or an `allocate` since the file's last
//!   successful `sync_data` is a *pending* op, kept in order; `sync_data` applies them to the
//!   durable content. Likewise each directory has a current and a durable set of entries, and
//!   `create_new`, `rename` and `remove_file` are pending entry ops of the parent directory
//!   until `sync_dir` on it.
//! - **Crash.** [`SimStorage::crash`] cuts the power: per [`CrashMode`], each pending write is
//!   kept, lost or torn at [`SECTOR_BYTES`] granularity, and each directory keeps a prefix of
//!   its pending entry ops. Then current = durable everywhere and every open handle is stale.
//! - **Power cut at an op boundary.** [`SimStorage::set_power_cut_after`] and
//!   [`SimStorage::mutating_ops`] let a test run a workload once to count its mutating ops,
//!   then replay it with the power cut after each one.
//! - **Faults.** EIO on the next or every read/write/sync/sync_dir/create ([`FaultOp`]), bit
//!   rot ([`SimStorage::flip_bit`]), misdirected writes, and raw pokes into the media.
//!
//! Decisions where real systems differ, chosen to be the harsher one where that is cheap:
//!
//! | event                          | simulated behaviour                                       |
//! |--------------------------------|-----------------------------------------------------------|
//! | `create_dir_all`               | durable at once (the engine creates directories at setup)  |
//! | injected EIO on `write_at`     | nothing is written                                         |
//! | injected EIO on `sync_data`    | pending writes are forgotten: still visible to reads, but  |
//! |                                | no later `sync_data` makes them durable (Linux marks the   |
//! |                                | pages clean after a writeback error — "fsyncgate")         |
//! | injected EIO on `sync_dir`     | the entry ops stay pending                                 |
//! | injected EIO on `create_new`   | nothing is created                                         |
//! | write extending the file       | the new length is durable with the write (per sector kept) |
//! | rename within a directory      | one atomic entry op                                        |
//! | rename across directories      | a link in the target directory plus an unlink in the       |
//! |                                | source, each durable only after `sync_dir` of its own      |
//! |                                | directory (sync the target first)                          |
//! | `remove_file` of an open file  | the handle keeps working on the unlinked file (POSIX)      |
//! | `crash`                        | clears a power cut; leaves injected faults armed           |
//!
//! Everything is single-threaded: state lives in one `Rc<RefCell<SimDisk>>`, every future
//! completes on its first poll and no borrow is held across an `.await` (there are none).
//! Works on a glommio executor or under `futures_lite::future::block_on`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{DirEntry, IoBuf, Storage, StorageFile, BLOCK_BYTES};

/// Unit of atomicity of the simulated media: a crash never leaves a sector half written.
pub const SECTOR_BYTES: u64 = 512;

/// Largest simulated file. Content is held in memory, so a bad offset (a corrupt length, a
/// misdirected write) must fail with EFBIG instead of allocating without bound.
pub const SIM_FILE_BYTES_MAX: u64 = 1 << 30;

const _: () = assert!(BLOCK_BYTES.is_multiple_of(SECTOR_BYTES));

/// What [`SimStorage::crash`] does with writes and entry ops that were not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and entry op is lost.
    LoseAllUnsynced,
    /// Every unsynced write and entry op reaches the media (as if synced just before).
    KeepAllUnsynced,
    /// Each unsynced write is independently kept whole or lost; each directory keeps a random
    /// prefix of its unsynced entry ops.
    RandomUnsynced,
    /// Like [`CrashMode::RandomUnsynced`], but a kept write may persist only a random subset of
    /// its [`SECTOR_BYTES`] sectors (each sector all-or-nothing).
    TornWrites,
}

/// An operation kind that [`SimStorage::fail_next`] and [`SimStorage::fail_always`] target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `StorageFile::read_at`.
    Read,
    /// `StorageFile::write_at` (not `allocate`).
    Write,
    /// `StorageFile::sync_data`.
    Sync,
    /// `Storage::sync_dir`.
    SyncDir,
    /// `Storage::create_new`.
    Create,
}

const FAULT_OPS: usize = 5;

impl FaultOp {
    fn index(self) -> usize {
        match self {
            FaultOp::Read => 0,
            FaultOp::Write => 1,
            FaultOp::Sync => 2,
            FaultOp::SyncDir => 3,
            FaultOp::Create => 4,
        }
    }
}

/// What one [`SimStorage::crash`] did, for assertions and for failure messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced writes that reached the media whole.
    pub writes_kept: u64,
    /// Unsynced writes of which only some sectors reached the media (at least one, not all).
    pub writes_torn: u64,
    /// Unsynced writes of which nothing reached the media.
    pub writes_lost: u64,
    /// Unsynced entry ops (create, rename, remove) that reached the media.
    pub dir_ops_kept: u64,
    /// Unsynced entry ops that were lost.
    pub dir_ops_lost: u64,
}

/// The buffer type of [`SimStorage`]: a plain zero-filled `Vec<u8>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBuf {
    bytes: Vec<u8>,
}

impl IoBuf for SimBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn trim_to(&mut self, len: usize) {
        assert!(
            len <= self.bytes.len(),
            "trim_to({len}) beyond length {}",
            self.bytes.len()
        );
        self.bytes.truncate(len);
    }
}

type InodeId = u64;

/// A change to a file's content not yet made durable by `sync_data`.
#[derive(Debug, Clone)]
enum PendingWrite {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// `allocate`: the size becomes at least `len`.
    Grow {
        len: u64,
    },
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Invariant: applying `pending` in order to `durable` yields `current`, except after a
    /// failed `sync_data`, which drops `pending` on purpose (see the module doc).
    pending: Vec<PendingWrite>,
}

/// A change to a directory's entries not yet made durable by `sync_dir`. Paths are full
/// (normalised) paths; the op is queued on the directory it changes.
#[derive(Debug, Clone)]
enum DirOp {
    /// `path` now names `ino` (create_new, or the target side of a cross-directory rename).
    Link { path: PathBuf, ino: InodeId },
    /// `path` is gone (remove_file, or the source side of a cross-directory rename).
    Unlink { path: PathBuf },
    /// Rename within one directory: atomic, as on a journaling file system.
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: InodeId,
    },
}

impl DirOp {
    fn apply(&self, names: &mut BTreeMap<PathBuf, InodeId>) {
        match self {
            DirOp::Link { path, ino } => {
                names.insert(path.clone(), *ino);
            }
            DirOp::Unlink { path } => {
                names.remove(path);
            }
            DirOp::Rename { from, to, ino } => {
                names.remove(from);
                names.insert(to.clone(), *ino);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// Per [`FaultOp::index`]: how many of the next such ops fail.
    next: [u32; FAULT_OPS],
    always: [bool; FAULT_OPS],
    /// The next `write_at` lands this many blocks away from where it was asked to.
    misdirect_blocks: Option<i64>,
}

#[derive(Debug, Default)]
struct SimDisk {
    inodes: BTreeMap<InodeId, Inode>,
    inode_next: InodeId,
    /// Current namespace: file path -> inode.
    files: BTreeMap<PathBuf, InodeId>,
    /// Durable namespace. Directories are durable at once, so `dirs` serves both.
    files_durable: BTreeMap<PathBuf, InodeId>,
    dirs: BTreeSet<PathBuf>,
    /// Per directory, the entry ops since its last `sync_dir`, in order.
    dir_ops_pending: BTreeMap<PathBuf, Vec<DirOp>>,
    /// Bumped by every crash; a handle from an older epoch is stale.
    epoch: u64,
    mutating_ops: u64,
    /// Once `mutating_ops` reaches this, every operation fails until `crash`.
    power_cut_at: Option<u64>,
    faults: Faults,
}

fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn os_error(code: i32, what: &str, path: &Path) -> io::Error {
    let base = io::Error::from_raw_os_error(code);
    io::Error::new(base.kind(), format!("{what} {}: {base}", path.display()))
}

fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} {}: no such file or directory", path.display()),
    )
}

fn injected_eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Copies `bytes` into `content` at `offset`, growing it with zeros as needed.
fn splice(content: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset..end].copy_from_slice(bytes);
}

fn apply_pending(content: &mut Vec<u8>, op: &PendingWrite) {
    match op {
        PendingWrite::Write { offset, bytes } => splice(content, *offset as usize, bytes),
        PendingWrite::Grow { len } => {
            if (content.len() as u64) < *len {
                content.resize(*len as usize, 0);
            }
        }
    }
}

fn check_file_bytes(end: u64, path_hint: &str) -> io::Result<()> {
    if end > SIM_FILE_BYTES_MAX {
        let base = io::Error::from_raw_os_error(libc::EFBIG);
        return Err(io::Error::new(
            base.kind(),
            format!("{path_hint}: {end} bytes exceeds the simulated file limit {SIM_FILE_BYTES_MAX}: {base}"),
        ));
    }
    Ok(())
}

impl SimDisk {
    fn dir_exists(&self, dir: &Path) -> bool {
        dir.as_os_str().is_empty() || dir == Path::new("/") || self.dirs.contains(dir)
    }

    fn check_power(&self) -> io::Result<()> {
        match self.power_cut_at {
            Some(at) if self.mutating_ops >= at => Err(io::Error::other(
                "power lost (simulated): call SimStorage::crash to restart",
            )),
            _ => Ok(()),
        }
    }

    /// Entry check of every mutating op: power first, then the op counts as a boundary.
    fn begin_mutating(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.mutating_ops += 1;
        Ok(())
    }

    /// Consumes one injected failure for `op`, if any is armed.
    fn take_fault(&mut self, op: FaultOp) -> bool {
        let i = op.index();
        if self.faults.always[i] {
            return true;
        }
        if self.faults.next[i] > 0 {
            self.faults.next[i] -= 1;
            return true;
        }
        false
    }

    fn inode(&self, ino: InodeId) -> io::Result<&Inode> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| io::Error::other(format!("simulated inode {ino} is gone")))
    }

    fn inode_mut(&mut self, ino: InodeId) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other(format!("simulated inode {ino} is gone")))
    }

    fn push_dir_op(&mut self, dir: PathBuf, op: DirOp) {
        self.dir_ops_pending.entry(dir).or_default().push(op);
    }

    /// The inode a helper refers to by (current) path. Helpers are test setup: a missing file
    /// is a bug in the test.
    fn helper_inode_mut(&mut self, path: &Path) -> &mut Inode {
        let path = normalize(path);
        let ino = match self.files.get(&path) {
            Some(ino) => *ino,
            None => panic!("SimStorage helper: no file {}", path.display()),
        };
        match self.inodes.get_mut(&ino) {
            Some(inode) => inode,
            None => panic!("SimStorage helper: inode of {} is gone", path.display()),
        }
    }

    fn crash(&mut self, rng_seed: u64, mode: CrashMode) -> CrashReport {
        let mut rng = SmallRng::seed_from_u64(rng_seed);
        let mut report = CrashReport::default();

        // Directories first, in path order, so the RNG draws are a function of the history.
        for (_dir, ops) in std::mem::take(&mut self.dir_ops_pending) {
            let kept = match mode {
                CrashMode::LoseAllUnsynced => 0,
                CrashMode::KeepAllUnsynced => ops.len(),
                // Entry ops of one directory reach the media in order (the journal commits
                // them in order), so what survives is a prefix.
                CrashMode::RandomUnsynced | CrashMode::TornWrites => rng.gen_range(0..=ops.len()),
            };
            for op in &ops[..kept] {
                op.apply(&mut self.files_durable);
            }
            report.dir_ops_kept += kept as u64;
            report.dir_ops_lost += (ops.len() - kept) as u64;
        }

        for inode in self.inodes.values_mut() {
            for op in std::mem::take(&mut inode.pending) {
                let PendingWrite::Write { offset, bytes } = &op else {
                    let keep = match mode {
                        CrashMode::LoseAllUnsynced => false,
                        CrashMode::KeepAllUnsynced => true,
                        CrashMode::RandomUnsynced | CrashMode::TornWrites => rng.gen_bool(0.5),
                    };
                    if keep {
                        apply_pending(&mut inode.durable, &op);
                    }
                    continue;
                };
                let fate = match mode {
                    CrashMode::LoseAllUnsynced => 0,
                    CrashMode::KeepAllUnsynced => 1,
                    CrashMode::RandomUnsynced => rng.gen_range(0..2),
                    CrashMode::TornWrites => rng.gen_range(0..3),
                };
                match fate {
                    0 => report.writes_lost += 1,
                    1 => {
                        apply_pending(&mut inode.durable, &op);
                        report.writes_kept += 1;
                    }
                    _ => {
                        let sector = SECTOR_BYTES as usize;
                        let sectors = bytes.len().div_ceil(sector);
                        let mut kept = 0;
                        for s in 0..sectors {
                            if rng.gen_bool(0.5) {
                                let start = s * sector;
                                let end = (start + sector).min(bytes.len());
                                splice(
                                    &mut inode.durable,
                                    *offset as usize + start,
                                    &bytes[start..end],
                                );
                                kept += 1;
                            }
                        }
                        match kept {
                            0 => report.writes_lost += 1,
                            k if k == sectors => report.writes_kept += 1,
                            _ => report.writes_torn += 1,
                        }
                    }
                }
            }
        }

        // Reboot: what the media holds is all there is.
        self.files = self.files_durable.clone();
        let live: BTreeSet<InodeId> = self.files.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        for inode in self.inodes.values_mut() {
            inode.current = inode.durable.clone();
        }
        self.epoch += 1;
        self.power_cut_at = None;
        report
    }
}

/// In-memory disk with crash simulation and fault injection. Clones share one disk.
#[derive(Clone, Default)]
pub struct SimStorage {
    disk: Rc<RefCell<SimDisk>>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.disk.try_borrow() {
            Ok(disk) => f
                .debug_struct("SimStorage")
                .field("files", &disk.files.len())
                .field("dirs", &disk.dirs.len())
                .field("epoch", &disk.epoch)
                .field("mutating_ops", &disk.mutating_ops)
                .finish(),
            Err(_) => f.write_str("SimStorage { <borrowed> }"),
        }
    }
}

impl SimStorage {
    /// An empty disk; the root (`/`, or `""` for relative paths) exists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts the power and restarts: unsynced writes and entry ops are kept, lost or torn per
    /// `mode`, drawn from an RNG seeded with `rng_seed` (same seed and same history, same
    /// outcome, on one build: `SmallRng` is not portable across platforms). Afterwards reads
    /// see only durable content, nothing is pending, a power cut is cleared, and every handle
    /// opened before is stale.
    pub fn crash(&self, rng_seed: u64, mode: CrashMode) -> CrashReport {
        self.disk.borrow_mut().crash(rng_seed, mode)
    }

    /// After `n` more mutating ops (write_at, sync_data, allocate, create_new, rename,
    /// remove_file, sync_dir; counted whether they succeed or fail) every operation fails with
    /// "power lost" until [`SimStorage::crash`]. `Some(0)` cuts at once; `None` disarms.
    pub fn set_power_cut_after(&self, n_ops: Option<u64>) {
        let mut disk = self.disk.borrow_mut();
        disk.power_cut_at = n_ops.map(|n| disk.mutating_ops.saturating_add(n));
    }

    /// Mutating ops attempted so far (not reset by a crash); each is a crash point for replay.
    pub fn mutating_ops(&self) -> u64 {
        self.disk.borrow().mutating_ops
    }

    /// Whether a power cut has happened and not yet been followed by [`SimStorage::crash`].
    pub fn power_lost(&self) -> bool {
        self.disk.borrow().check_power().is_err()
    }

    /// The next `count` ops of kind `op` fail with EIO and do nothing (see the module doc for
    /// what a failed sync does). Adds to any count already armed.
    pub fn fail_next(&self, op: FaultOp, count: u32) {
        let mut disk = self.disk.borrow_mut();
        let next = &mut disk.faults.next[op.index()];
        *next = next.saturating_add(count);
    }

    /// While `on`, every op of kind `op` fails with EIO.
    pub fn fail_always(&self, op: FaultOp, on: bool) {
        self.disk.borrow_mut().faults.always[op.index()] = on;
    }

    /// The next `write_at` (to any file) lands `delta_blocks` blocks away from the offset asked
    /// for and reports success. Panics at that write if the target would be negative.
    pub fn misdirect_next_write(&self, delta_blocks: i64) {
        self.disk.borrow_mut().faults.misdirect_blocks = Some(delta_blocks);
    }

    /// Bit rot: flips bit `bit` (0..8) of byte `byte_offset` of the file at `path`, in the
    /// current and the durable content (and in pending writes covering it, so a later sync
    /// does not heal it). Bytes beyond either content's end are left alone. Panics if there
    /// is no such file or the byte is beyond the current end.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) {
        assert!(bit < 8, "bit {bit} out of range");
        let mask = 1u8 << bit;
        let mut disk = self.disk.borrow_mut();
        let inode = disk.helper_inode_mut(path);
        let at = byte_offset as usize;
        assert!(
            at < inode.current.len(),
            "flip_bit at {byte_offset} beyond the end of {} ({} bytes)",
            path.display(),
            inode.current.len()
        );
        inode.current[at] ^= mask;
        if let Some(b) = inode.durable.get_mut(at) {
            *b ^= mask;
        }
        for op in &mut inode.pending {
            if let PendingWrite::Write { offset, bytes } = op {
                if let Some(b) = at
                    .checked_sub(*offset as usize)
                    .and_then(|i| bytes.get_mut(i))
                {
                    *b ^= mask;
                }
            }
        }
    }

    /// Current length of the file at `path`, or `None` if there is none.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let disk = self.disk.borrow();
        let ino = disk.files.get(&normalize(path))?;
        disk.inodes.get(ino).map(|i| i.current.len() as u64)
    }

    /// What the file at `path` would hold after a [`CrashMode::LoseAllUnsynced`] crash: its
    /// durable content if its entry is durable, else `None`.
    pub fn read_durable(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        let ino = disk.files_durable.get(&normalize(path))?;
        disk.inodes.get(ino).map(|i| i.durable.clone())
    }

    /// What reads of the file at `path` see now, or `None` if there is no such file.
    pub fn read_current(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        let ino = disk.files.get(&normalize(path))?;
        disk.inodes.get(ino).map(|i| i.current.clone())
    }

    /// Pokes `bytes` at `offset` (any alignment) into the current and durable content of the
    /// file at `path`, growing it with zeros as needed; pending writes covering those bytes
    /// are patched too. Does not count as an op and ignores power and faults. Panics if there
    /// is no such file.
    pub fn write_raw(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let mut disk = self.disk.borrow_mut();
        let inode = disk.helper_inode_mut(path);
        let at = offset as usize;
        splice(&mut inode.current, at, bytes);
        splice(&mut inode.durable, at, bytes);
        let poke_end = at + bytes.len();
        for op in &mut inode.pending {
            if let PendingWrite::Write {
                offset,
                bytes: pending,
            } = op
            {
                let start = (*offset as usize).max(at);
                let end = (*offset as usize + pending.len()).min(poke_end);
                if start < end {
                    pending[start - *offset as usize..end - *offset as usize]
                        .copy_from_slice(&bytes[start - at..end - at]);
                }
            }
        }
    }

    /// Cuts the file at `path` to `len` bytes (or grows it with zeros), current and durable
    /// content alike; pending writes and allocations are clipped to `len`. Panics if there is
    /// no such file.
    pub fn truncate_raw(&self, path: &Path, len: u64) {
        let mut disk = self.disk.borrow_mut();
        let inode = disk.helper_inode_mut(path);
        let len_usize = len as usize;
        inode.current.resize(len_usize, 0);
        inode.durable.resize(len_usize, 0);
        inode.pending.retain_mut(|op| match op {
            PendingWrite::Write { offset, bytes } => {
                let keep = (len_usize).saturating_sub(*offset as usize);
                bytes.truncate(keep);
                !bytes.is_empty()
            }
            PendingWrite::Grow { len: grow } => {
                *grow = (*grow).min(len);
                true
            }
        });
    }

    /// Paths of every file in the current namespace, sorted.
    pub fn list_files(&self) -> Vec<PathBuf> {
        self.disk.borrow().files.keys().cloned().collect()
    }

    /// Deletes the file at `path` from the current and durable namespace at once, and drops
    /// pending entry ops that would bring it back. Returns whether there was such a file.
    pub fn remove_raw(&self, path: &Path) -> bool {
        let path = normalize(path);
        let mut disk = self.disk.borrow_mut();
        let was_current = disk.files.remove(&path).is_some();
        let was_durable = disk.files_durable.remove(&path).is_some();
        for ops in disk.dir_ops_pending.values_mut() {
            ops.retain(|op| match op {
                DirOp::Link { path: p, .. } => *p != path,
                DirOp::Rename { to, .. } => *to != path,
                DirOp::Unlink { .. } => true,
            });
        }
        was_current || was_durable
    }

    fn open_handle(&self, disk: &SimDisk, path: PathBuf, ino: InodeId, writable: bool) -> SimFile {
        SimFile {
            disk: Rc::clone(&self.disk),
            path,
            ino,
            writable,
            epoch: disk.epoch,
        }
    }
}

impl Storage for SimStorage {
    type Buf = SimBuf;
    type File = SimFile;

    fn alloc_buf(&self, len: usize) -> SimBuf {
        assert!(
            (len as u64).is_multiple_of(BLOCK_BYTES),
            "unaligned buffer length {len}"
        );
        SimBuf {
            bytes: vec![0; len],
        }
    }

    async fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let path = normalize(path);
        let mut disk = self.disk.borrow_mut();
        disk.begin_mutating()?;
        if disk.take_fault(FaultOp::Create) {
            return Err(injected_eio());
        }
        let dir = parent_of(&path);
        if !disk.dir_exists(&dir) {
            return Err(not_found("create", &path));
        }
        if disk.files.contains_key(&path) || disk.dirs.contains(&path) {
            return Err(os_error(libc::EEXIST, "create", &path));
        }
        let ino = disk.inode_next;
        disk.inode_next += 1;
        disk.inodes.insert(ino, Inode::default());
        disk.files.insert(path.clone(), ino);
        disk.push_dir_op(
            dir,
            DirOp::Link {
                path: path.clone(),
                ino,
            },
        );
        Ok(self.open_handle(&disk, path, ino, true))
    }

    async fn open(&self, path: &Path, writable: bool) -> io::Result<SimFile> {
        let path = normalize(path);
        let disk = self.disk.borrow();
        disk.check_power()?;
        if disk.dirs.contains(&path) {
            return Err(os_error(libc::EISDIR, "open", &path));
        }
        let ino = *disk
            .files
            .get(&path)
            .ok_or_else(|| not_found("open", &path))?;
        Ok(self.open_handle(&disk, path, ino, writable))
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut disk = self.disk.borrow_mut();
        disk.begin_mutating()?;
        if disk.dirs.contains(&path) {
            return Err(os_error(libc::EISDIR, "remove", &path));
        }
        if disk.files.remove(&path).is_none() {
            return Err(not_found("remove", &path));
        }
        // The inode lives on for open handles; a crash collects it if no durable entry names it.
        disk.push_dir_op(parent_of(&path), DirOp::Unlink { path });
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = normalize(from);
        let to = normalize(to);
        let mut disk = self.disk.borrow_mut();
        disk.begin_mutating()?;
        if disk.dirs.contains(&from) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "rename {}: the simulated disk renames files only",
                    from.display()
                ),
            ));
        }
        let ino = *disk
            .files
            .get(&from)
            .ok_or_else(|| not_found("rename", &from))?;
        if disk.dirs.contains(&to) {
            return Err(os_error(libc::EISDIR, "rename to", &to));
        }
        let (from_dir, to_dir) = (parent_of(&from), parent_of(&to));
        if !disk.dir_exists(&to_dir) {
            return Err(not_found("rename to", &to));
        }
        if from == to {
            return Ok(());
        }
        disk.files.remove(&from);
        disk.files.insert(to.clone(), ino);
        if from_dir == to_dir {
            disk.push_dir_op(from_dir, DirOp::Rename { from, to, ino });
        } else {
            disk.push_dir_op(to_dir, DirOp::Link { path: to, ino });
            disk.push_dir_op(from_dir, DirOp::Unlink { path: from });
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = normalize(dir);
        let mut disk = self.disk.borrow_mut();
        disk.begin_mutating()?;
        if disk.take_fault(FaultOp::SyncDir) {
            return Err(injected_eio());
        }
        if !disk.dir_exists(&dir) {
            return Err(not_found("sync_dir", &dir));
        }
        for op in disk.dir_ops_pending.remove(&dir).unwrap_or_default() {
            op.apply(&mut disk.files_durable);
        }
        Ok(())
    }

    /// Durable at once: the simulation does not model losing a directory.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let dir = normalize(dir);
        let mut disk = self.disk.borrow_mut();
        disk.check_power()?;
        let mut missing = Vec::new();
        for ancestor in dir.ancestors() {
            if disk.dir_exists(ancestor) {
                break;
            }
            if disk.files.contains_key(ancestor) {
                let code = if ancestor == dir {
                    libc::EEXIST
                } else {
                    libc::ENOTDIR
                };
                return Err(os_error(code, "create_dir_all", &dir));
            }
            missing.push(ancestor.to_path_buf());
        }
        disk.dirs.extend(missing);
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let dir = normalize(dir);
        let disk = self.disk.borrow();
        disk.check_power()?;
        if disk.files.contains_key(&dir) {
            return Err(os_error(libc::ENOTDIR, "list_dir", &dir));
        }
        if !disk.dir_exists(&dir) {
            return Err(not_found("list_dir", &dir));
        }
        let entry = |p: &PathBuf, is_dir: bool| {
            (p.parent() == Some(dir.as_path()))
                .then(|| p.file_name())
                .flatten()
                .map(|name| DirEntry {
                    name: name.to_string_lossy().into_owned(),
                    is_dir,
                })
        };
        let mut out: Vec<DirEntry> = disk
            .files
            .keys()
            .filter_map(|p| entry(p, false))
            .chain(disk.dirs.iter().filter_map(|p| entry(p, true)))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = normalize(path);
        let disk = self.disk.borrow();
        disk.check_power()?;
        Ok(disk.files.contains_key(&path) || disk.dir_exists(&path))
    }
}

/// A handle on one simulated file. Like a file descriptor it follows the file through renames
/// and outlives its removal; unlike one, it dies with a crash.
pub struct SimFile {
    disk: Rc<RefCell<SimDisk>>,
    /// The path it was opened by, for error messages only.
    path: PathBuf,
    ino: InodeId,
    writable: bool,
    /// Invariant: valid only while equal to the disk's epoch.
    epoch: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("writable", &self.writable)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SimFile {
    fn check_live(&self, disk: &SimDisk) -> io::Result<()> {
        if self.epoch != disk.epoch {
            return Err(io::Error::other(format!(
                "{}: stale handle after crash",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn check_writable(&self) -> io::Result<()> {
        if !self.writable {
            return Err(os_error(libc::EBADF, "write to read-only", &self.path));
        }
        Ok(())
    }
}

impl StorageFile for SimFile {
    type Buf = SimBuf;
    type ReadBuf = Vec<u8>;

    async fn write_at(&self, buf: SimBuf, offset: u64) -> io::Result<()> {
        let len = buf.bytes.len() as u64;
        assert!(
            offset.is_multiple_of(BLOCK_BYTES) && len.is_multiple_of(BLOCK_BYTES),
            "unaligned write of {len} bytes at offset {offset} to {}",
            self.path.display()
        );
        let mut disk = self.disk.borrow_mut();
        self.check_live(&disk)?;
        disk.begin_mutating()?;
        self.check_writable()?;
        if disk.take_fault(FaultOp::Write) {
            return Err(injected_eio());
        }
        let offset = match disk.faults.misdirect_blocks.take() {
            None => offset,
            Some(delta) => {
                let target = i128::from(offset) + i128::from(delta) * i128::from(BLOCK_BYTES);
                match u64::try_from(target) {
                    Ok(target) => target,
                    Err(_) => panic!(
                        "misdirected write to {} lands before the start of the file",
                        self.path.display()
                    ),
                }
            }
        };
        let end = offset.saturating_add(len);
        check_file_bytes(end, &self.path.display().to_string())?;
        let inode = disk.inode_mut(self.ino)?;
        splice(&mut inode.current, offset as usize, &buf.bytes);
        inode.pending.push(PendingWrite::Write {
            offset,
            bytes: buf.bytes,
        });
        Ok(())
    }

    async fn write_shared_at(&self, buf: std::rc::Rc<SimBuf>, offset: u64) -> io::Result<()> {
        // The simulated disk copies what it is given, so a copy of the buffer is the same
        // write.
        let copy = SimBuf {
            bytes: buf.bytes.clone(),
        };
        self.write_at(copy, offset).await
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut disk = self.disk.borrow_mut();
        self.check_live(&disk)?;
        disk.check_power()?;
        if disk.take_fault(FaultOp::Read) {
            return Err(injected_eio());
        }
        let content = &disk.inode(self.ino)?.current;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(len).min(content.len());
        Ok(content[start..end].to_vec())
    }

    /// A write whose own range becomes durable when it completes (`O_DSYNC`), together with
    /// the size changes needed to read it and any earlier unsynced write it overlaps (those
    /// reach the media first, so the newer bytes stay on top); other unsynced writes to the
    /// file stay unsynced, as they would on a real disk.
    async fn write_durable_at(&self, buf: SimBuf, offset: u64) -> io::Result<()> {
        self.write_at(buf, offset).await?;
        let mut disk = self.disk.borrow_mut();
        self.check_live(&disk)?;
        // Its own boundary: a power cut here finds the write issued but not yet durable
        // (lost or torn at the crash), as a crash in the middle of a real one would.
        disk.begin_mutating()?;
        if disk.take_fault(FaultOp::Sync) {
            // The device reported the flush failed: the write may or may not survive.
            return Err(injected_eio());
        }
        let inode = disk.inode_mut(self.ino)?;
        let pending = std::mem::take(&mut inode.pending);
        let (start, end) = match pending.last() {
            Some(PendingWrite::Write { offset, bytes }) => (*offset, *offset + bytes.len() as u64),
            _ => unreachable!("write_at just queued this write"),
        };
        let last = pending.len() - 1;
        for (i, op) in pending.into_iter().enumerate() {
            let durable_now = match &op {
                PendingWrite::Grow { .. } => true,
                PendingWrite::Write { offset, bytes } => {
                    i == last || (*offset < end && start < *offset + bytes.len() as u64)
                }
            };
            if durable_now {
                apply_pending(&mut inode.durable, &op);
            } else {
                inode.pending.push(op);
            }
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        self.check_live(&disk)?;
        disk.begin_mutating()?;
        let failed = disk.take_fault(FaultOp::Sync);
        let inode = disk.inode_mut(self.ino)?;
        let pending = std::mem::take(&mut inode.pending);
        if failed {
            // Writeback failed: the pages are marked clean, the data never reaches the media.
            return Err(injected_eio());
        }
        for op in &pending {
            apply_pending(&mut inode.durable, op);
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        self.check_live(&disk)?;
        disk.begin_mutating()?;
        self.check_writable()?;
        check_file_bytes(len, &self.path.display().to_string())?;
        let inode = disk.inode_mut(self.ino)?;
        if (inode.current.len() as u64) < len {
            let op = PendingWrite::Grow { len };
            apply_pending(&mut inode.current, &op);
            inode.pending.push(op);
        }
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        let disk = self.disk.borrow();
        self.check_live(&disk)?;
        disk.check_power()?;
        Ok(disk.inode(self.ino)?.current.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        let disk = self.disk.borrow();
        self.check_live(&disk)?;
        disk.check_power()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    const B: usize = BLOCK_BYTES as usize;

    fn buf(storage: &SimStorage, blocks: usize, fill: u8) -> SimBuf {
        let mut b = storage.alloc_buf(blocks * B);
        b.as_bytes_mut().fill(fill);
        b
    }

    /// A disk with directory `/d` and a durable, synced file `/d/f` of `blocks` blocks of `fill`.
    fn disk_with_file(blocks: usize, fill: u8) -> (SimStorage, PathBuf) {
        let s = SimStorage::new();
        let path = PathBuf::from("/d/f");
        block_on(async {
            s.create_dir_all(Path::new("/d")).await.unwrap();
            let f = s.create_new(&path).await.unwrap();
            f.write_at(buf(&s, blocks, fill), 0).await.unwrap();
            f.sync_data().await.unwrap();
            s.sync_dir(Path::new("/d")).await.unwrap();
            f.close().await.unwrap();
        });
        (s, path)
    }

    fn is_eio(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::EIO)
    }

    /// A durable write survives a crash that loses everything unsynced, with the size it
    /// needs and an earlier overlapping write under it; an unrelated earlier write does not.
    #[test]
    fn durable_write_survives_alone_what_an_fdatasync_would_cover() {
        let s = SimStorage::new();
        let path = Path::new("/x");
        block_on(async {
            s.sync_dir(Path::new("/")).await.unwrap();
            let f = s.create_new(path).await.unwrap();
            s.sync_dir(Path::new("/")).await.unwrap();
            f.allocate(4 * B as u64).await.unwrap();
            let fill = |v: u8, len: usize| {
                let mut b = s.alloc_buf(len);
                b.as_bytes_mut().fill(v);
                b
            };
            f.write_at(fill(1, B), 0).await.unwrap(); // unrelated, stays unsynced
            f.write_at(fill(2, 2 * B), 2 * B as u64).await.unwrap(); // under the durable one
            f.write_durable_at(fill(3, B), 2 * B as u64).await.unwrap();
            f.close().await.unwrap();
        });
        s.crash(1, CrashMode::LoseAllUnsynced);
        let durable = s.read_durable(path).unwrap();
        assert_eq!(
            durable.len(),
            4 * B,
            "the size needed to read it back is durable"
        );
        assert!(durable[..B].iter().all(|&x| x == 0), "unrelated write lost");
        assert!(
            durable[2 * B..3 * B].iter().all(|&x| x == 3),
            "durable write kept"
        );
        assert!(
            durable[3 * B..].iter().all(|&x| x == 2),
            "the overlapped earlier write reached the media first"
        );
    }

    /// A power cut after the durable write was issued but before it completed leaves it
    /// unsynced: lost when unsynced writes are lost.
    #[test]
    fn durable_write_cut_before_completion_is_not_durable() {
        let s = SimStorage::new();
        let path = Path::new("/x");
        block_on(async {
            let f = s.create_new(path).await.unwrap();
            s.sync_dir(Path::new("/")).await.unwrap();
            let mut b = s.alloc_buf(B);
            b.as_bytes_mut().fill(7);
            s.set_power_cut_after(Some(1)); // the write is issued, its completion is cut
            assert!(f.write_durable_at(b, 0).await.is_err());
        });
        s.crash(1, CrashMode::LoseAllUnsynced);
        assert!(s.read_durable(path).unwrap().iter().all(|&x| x == 0));
    }

    #[test]
    fn write_read_round_trip() {
        let s = SimStorage::new();
        block_on(async {
            s.create_dir_all(Path::new("/a/b")).await.unwrap();
            let f = s.create_new(Path::new("/a/b/x")).await.unwrap();
            let mut b = s.alloc_buf(2 * B);
            assert!(b.as_bytes().iter().all(|&x| x == 0));
            for (i, x) in b.as_bytes_mut().iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            f.write_at(b.clone(), B as u64).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 3 * B as u64);
            let got = f.read_at(B as u64, 2 * B).await.unwrap();
            assert_eq!(&got[..], b.as_bytes());
            // The hole before the write reads as zeros; reads are short only at EOF.
            assert!(f.read_at(0, B).await.unwrap().iter().all(|&x| x == 0));
            assert_eq!(f.read_at(3 * B as u64 - 10, 100).await.unwrap().len(), 10);
            assert!(f.read_at(10 * B as u64, 100).await.unwrap().is_empty());
            f.allocate(8 * B as u64).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 8 * B as u64);
            f.allocate(B as u64).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 8 * B as u64);
            f.close().await.unwrap();

            let listed = s.list_dir(Path::new("/a")).await.unwrap();
            assert_eq!(
                listed,
                vec![DirEntry {
                    name: "b".into(),
                    is_dir: true
                }]
            );
            let listed = s.list_dir(Path::new("/a/b")).await.unwrap();
            assert_eq!(listed[0].name, "x");
            assert!(!listed[0].is_dir);
            let e = s.list_dir(Path::new("/nope")).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            let e = s.create_new(Path::new("/a/b/x")).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
            let e = s.open(Path::new("/a/b/y"), false).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            let ro = s.open(Path::new("/a/b/x"), false).await.unwrap();
            assert!(ro.write_at(buf(&s, 1, 1), 0).await.is_err());
            assert!(s.exists(Path::new("/a/b/x")).await.unwrap());
            assert!(s.exists(Path::new("/a")).await.unwrap());
            assert!(!s.exists(Path::new("/a/c")).await.unwrap());
        });
    }

    #[test]
    fn list_dir_sorted_with_relative_paths() {
        let s = SimStorage::new();
        block_on(async {
            s.create_dir_all(Path::new("./data/sub")).await.unwrap();
            for name in ["data/zeta", "data/alpha", "data/mid"] {
                s.create_new(Path::new(name)).await.unwrap();
            }
            let names: Vec<_> = s
                .list_dir(Path::new("data"))
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.name, e.is_dir))
                .collect();
            assert_eq!(
                names,
                vec![
                    ("alpha".to_string(), false),
                    ("mid".to_string(), false),
                    ("sub".to_string(), true),
                    ("zeta".to_string(), false),
                ]
            );
            let root = s.list_dir(Path::new(".")).await.unwrap();
            assert_eq!(root.len(), 1);
            assert_eq!(root[0].name, "data");
        });
    }

    #[test]
    fn unsynced_write_lost_with_lose_all_kept_after_sync_data() {
        let (s, path) = disk_with_file(2, 0xAA);
        block_on(async {
            let f = s.open(&path, true).await.unwrap();
            f.write_at(buf(&s, 1, 0xBB), B as u64).await.unwrap();
            f.write_at(buf(&s, 1, 0xCC), 2 * B as u64).await.unwrap();
            assert_eq!(s.read_current(&path).unwrap()[B], 0xBB);
            assert_eq!(s.read_durable(&path).unwrap(), vec![0xAA; 2 * B]);
        });
        let report = s.crash(1, CrashMode::LoseAllUnsynced);
        assert_eq!(report.writes_lost, 2);
        assert_eq!(s.read_current(&path).unwrap(), vec![0xAA; 2 * B]);

        block_on(async {
            let f = s.open(&path, true).await.unwrap();
            f.write_at(buf(&s, 1, 0xBB), B as u64).await.unwrap();
            f.allocate(4 * B as u64).await.unwrap();
            f.sync_data().await.unwrap();
        });
        s.crash(2, CrashMode::LoseAllUnsynced);
        let got = s.read_current(&path).unwrap();
        assert_eq!(got.len(), 4 * B);
        assert!(got[..B].iter().all(|&x| x == 0xAA));
        assert!(got[B..2 * B].iter().all(|&x| x == 0xBB));
        assert!(got[2 * B..].iter().all(|&x| x == 0));
    }

    #[test]
    fn unsynced_allocate_lost_with_lose_all() {
        let (s, path) = disk_with_file(1, 1);
        block_on(async {
            let f = s.open(&path, true).await.unwrap();
            f.allocate(16 * B as u64).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 16 * B as u64);
        });
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.file_len(&path), Some(B as u64));
    }

    #[test]
    fn keep_all_keeps_unsynced_writes_and_entries() {
        let s = SimStorage::new();
        block_on(async {
            let f = s.create_new(Path::new("x")).await.unwrap();
            f.write_at(buf(&s, 1, 7), 0).await.unwrap();
        });
        let report = s.crash(0, CrashMode::KeepAllUnsynced);
        assert_eq!((report.writes_kept, report.dir_ops_kept), (1, 1));
        assert_eq!(s.read_current(Path::new("x")).unwrap(), vec![7; B]);
    }

    #[test]
    fn torn_writes_tear_at_sector_granularity_only() {
        const BLOCKS: usize = 2;
        let sector = SECTOR_BYTES as usize;
        let mut torn_seen = 0;
        for seed in 0..200u64 {
            let (s, path) = disk_with_file(BLOCKS, 0);
            block_on(async {
                let f = s.open(&path, true).await.unwrap();
                let mut b = s.alloc_buf(BLOCKS * B);
                for (i, chunk) in b.as_bytes_mut().chunks_mut(sector).enumerate() {
                    chunk.fill(i as u8 + 1);
                }
                f.write_at(b, 0).await.unwrap();
            });
            let report = s.crash(seed, CrashMode::TornWrites);
            let got = s.read_current(&path).unwrap();
            assert_eq!(got.len(), BLOCKS * B, "seed {seed}");
            let mut new_sectors = 0;
            for (i, chunk) in got.chunks(sector).enumerate() {
                let old = chunk.iter().all(|&x| x == 0);
                let new = chunk.iter().all(|&x| x == i as u8 + 1);
                assert!(
                    old || new,
                    "seed {seed}: sector {i} mixes old and new bytes"
                );
                new_sectors += usize::from(new);
            }
            let sectors = BLOCKS * B / sector;
            if new_sectors > 0 && new_sectors < sectors {
                torn_seen += 1;
                assert_eq!(report.writes_torn, 1, "seed {seed}");
            }
        }
        assert!(torn_seen > 0, "no seed in 0..200 tore the write");
    }

    #[test]
    fn crash_is_deterministic_per_seed() {
        let run = |seed| {
            let s = SimStorage::new();
            block_on(async {
                let f = s.create_new(Path::new("x")).await.unwrap();
                f.write_at(buf(&s, 1, 1), 0).await.unwrap();
                f.sync_data().await.unwrap();
                s.sync_dir(Path::new("")).await.unwrap();
                for i in 0..16u8 {
                    f.write_at(buf(&s, 1, i + 2), u64::from(i) * BLOCK_BYTES)
                        .await
                        .unwrap();
                }
            });
            s.crash(seed, CrashMode::TornWrites);
            s.read_current(Path::new("x")).unwrap()
        };
        assert_eq!(run(42), run(42));
        assert!((0..8).any(|seed| run(seed) != run(42)));
    }

    #[test]
    fn create_without_sync_dir_lost_with_sync_dir_survives() {
        let s = SimStorage::new();
        let dir = Path::new("/wal");
        block_on(async {
            s.create_dir_all(dir).await.unwrap();
            let f = s.create_new(&dir.join("a")).await.unwrap();
            f.write_at(buf(&s, 1, 3), 0).await.unwrap();
            f.sync_data().await.unwrap(); // data durable, entry not
        });
        assert_eq!(s.read_durable(&dir.join("a")), None);
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), Vec::<PathBuf>::new());
        // The directory itself was durable at once.
        assert!(block_on(s.list_dir(dir)).unwrap().is_empty());

        block_on(async {
            let f = s.create_new(&dir.join("a")).await.unwrap();
            f.write_at(buf(&s, 1, 3), 0).await.unwrap();
            f.sync_data().await.unwrap();
            s.sync_dir(dir).await.unwrap();
        });
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), vec![dir.join("a")]);
        assert_eq!(s.read_current(&dir.join("a")).unwrap(), vec![3; B]);
    }

    #[test]
    fn rename_and_remove_durable_only_after_sync_dir() {
        let (s, path) = disk_with_file(1, 5);
        let to = PathBuf::from("/d/g");
        block_on(s.rename(&path, &to)).unwrap();
        assert_eq!(s.list_files(), vec![to.clone()]);
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), vec![path.clone()]);

        block_on(async {
            s.rename(&path, &to).await.unwrap();
            s.sync_dir(Path::new("/d")).await.unwrap();
        });
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), vec![to.clone()]);
        assert_eq!(s.read_current(&to).unwrap(), vec![5; B]);

        block_on(s.remove_file(&to)).unwrap();
        assert_eq!(s.list_files(), Vec::<PathBuf>::new());
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), vec![to.clone()]);
        block_on(async {
            s.remove_file(&to).await.unwrap();
            s.sync_dir(Path::new("/d")).await.unwrap();
        });
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.list_files(), Vec::<PathBuf>::new());
    }

    #[test]
    fn random_crash_keeps_a_prefix_of_dir_ops() {
        for seed in 0..50 {
            let s = SimStorage::new();
            block_on(async {
                for i in 0..6 {
                    s.create_new(Path::new(&format!("f{i}"))).await.unwrap();
                }
            });
            let report = s.crash(seed, CrashMode::RandomUnsynced);
            let kept = report.dir_ops_kept as usize;
            let expect: Vec<PathBuf> = (0..kept).map(|i| PathBuf::from(format!("f{i}"))).collect();
            assert_eq!(s.list_files(), expect, "seed {seed}");
        }
    }

    #[test]
    fn write_file_atomic_survives_crash() {
        let s = SimStorage::new();
        let path = Path::new("/m/meta");
        block_on(async {
            s.create_dir_all(Path::new("/m")).await.unwrap();
            super::super::write_file_atomic(&s, path, b"hello")
                .await
                .unwrap();
        });
        s.crash(9, CrashMode::LoseAllUnsynced);
        let got = block_on(super::super::read_file(&s, path)).unwrap();
        assert_eq!(&got[..5], b"hello");
    }

    #[test]
    fn power_cut_after_n_ops_fails_op_n_plus_one() {
        let workload = |s: &SimStorage| -> io::Result<()> {
            block_on(async {
                let f = s.create_new(Path::new("w")).await?; // 1
                f.write_at(buf(s, 1, 1), 0).await?; // 2
                f.sync_data().await?; // 3
                s.sync_dir(Path::new("")).await?; // 4
                f.write_at(buf(s, 1, 2), BLOCK_BYTES).await?; // 5
                f.sync_data().await // 6
            })
        };
        let s = SimStorage::new();
        workload(&s).unwrap();
        let total = s.mutating_ops();
        assert_eq!(total, 6);

        for n in 0..total {
            let s = SimStorage::new();
            s.set_power_cut_after(Some(n));
            let e = workload(&s).unwrap_err();
            assert!(e.to_string().contains("power lost"), "{e}");
            assert_eq!(s.mutating_ops(), n, "op {} must not have run", n + 1);
            assert!(s.power_lost());
            // Reads fail too until the restart.
            assert!(block_on(s.exists(Path::new("w"))).is_err());
            s.crash(n, CrashMode::LoseAllUnsynced);
            assert!(!s.power_lost());
            let durable = s.read_current(Path::new("w"));
            match n {
                0..=3 => assert_eq!(durable, None, "cut after {n}"),
                _ => assert_eq!(durable.unwrap()[..B], vec![1; B][..], "cut after {n}"),
            }
        }
    }

    #[test]
    fn fail_next_returns_eio_for_read_write_sync() {
        let (s, path) = disk_with_file(1, 1);
        block_on(async {
            let f = s.open(&path, true).await.unwrap();

            s.fail_next(FaultOp::Read, 1);
            assert!(is_eio(&f.read_at(0, 10).await.unwrap_err()));
            assert_eq!(f.read_at(0, 10).await.unwrap(), vec![1; 10]);

            s.fail_next(FaultOp::Write, 2);
            assert!(is_eio(&f.write_at(buf(&s, 1, 2), 0).await.unwrap_err()));
            assert!(is_eio(&f.write_at(buf(&s, 1, 2), 0).await.unwrap_err()));
            assert_eq!(
                s.read_current(&path).unwrap(),
                vec![1; B],
                "failed write applied"
            );
            f.write_at(buf(&s, 1, 2), 0).await.unwrap();

            // A failed fdatasync loses the data for good, even if a retry "succeeds".
            s.fail_next(FaultOp::Sync, 1);
            assert!(is_eio(&f.sync_data().await.unwrap_err()));
            f.sync_data().await.unwrap();
            assert_eq!(s.read_current(&path).unwrap(), vec![2; B]);
            assert_eq!(s.read_durable(&path).unwrap(), vec![1; B]);

            s.fail_always(FaultOp::SyncDir, true);
            for _ in 0..3 {
                assert!(is_eio(&s.sync_dir(Path::new("/d")).await.unwrap_err()));
            }
            s.fail_always(FaultOp::SyncDir, false);
            s.sync_dir(Path::new("/d")).await.unwrap();

            s.fail_next(FaultOp::Create, 1);
            assert!(is_eio(&s.create_new(Path::new("/d/n")).await.unwrap_err()));
            assert!(!s.exists(Path::new("/d/n")).await.unwrap());
        });
    }

    #[test]
    fn flip_bit_visible_in_current_and_durable() {
        let (s, path) = disk_with_file(1, 0);
        s.flip_bit(&path, 100, 3);
        let f = block_on(s.open(&path, false)).unwrap();
        assert_eq!(block_on(f.read_at(100, 1)).unwrap(), vec![8]);
        assert_eq!(s.read_durable(&path).unwrap()[100], 8);
        s.crash(0, CrashMode::LoseAllUnsynced);
        assert_eq!(s.read_current(&path).unwrap()[100], 8);
    }

    #[test]
    fn raw_pokes_change_current_and_durable() {
        let (s, path) = disk_with_file(2, 9);
        s.write_raw(&path, 10, &[0; 5]);
        s.write_raw(&path, 2 * B as u64 + 3, b"xy");
        assert_eq!(s.file_len(&path), Some(2 * B as u64 + 5));
        s.truncate_raw(&path, B as u64 + 1);
        s.crash(0, CrashMode::LoseAllUnsynced);
        let got = s.read_current(&path).unwrap();
        assert_eq!(got.len(), B + 1);
        assert_eq!(&got[9..16], &[9, 0, 0, 0, 0, 0, 9]);
        assert!(s.remove_raw(&path));
        assert!(s.list_files().is_empty());
    }

    #[test]
    fn handles_are_stale_after_crash() {
        let (s, path) = disk_with_file(1, 1);
        let f = block_on(s.open(&path, true)).unwrap();
        s.crash(0, CrashMode::KeepAllUnsynced);
        let errs = block_on(async {
            vec![
                f.read_at(0, 1).await.unwrap_err(),
                f.write_at(buf(&s, 1, 0), 0).await.unwrap_err(),
                f.sync_data().await.unwrap_err(),
                f.len().await.unwrap_err(),
            ]
        });
        for e in errs {
            assert_eq!(e.kind(), io::ErrorKind::Other);
            assert!(e.to_string().contains("stale handle after crash"), "{e}");
        }
        let f = block_on(s.open(&path, true)).unwrap();
        assert_eq!(block_on(f.read_at(0, 1)).unwrap(), vec![1]);
    }

    #[test]
    fn misdirected_write_lands_elsewhere() {
        let (s, path) = disk_with_file(4, 0);
        block_on(async {
            let f = s.open(&path, true).await.unwrap();
            s.misdirect_next_write(2);
            f.write_at(buf(&s, 1, 0xEE), BLOCK_BYTES).await.unwrap();
            f.sync_data().await.unwrap();
            let got = f.read_at(0, 4 * B).await.unwrap();
            assert!(
                got[B..2 * B].iter().all(|&x| x == 0),
                "intended block written"
            );
            assert!(
                got[3 * B..].iter().all(|&x| x == 0xEE),
                "target block untouched"
            );
            // Only the next write is misdirected.
            f.write_at(buf(&s, 1, 0xDD), BLOCK_BYTES).await.unwrap();
            assert_eq!(f.read_at(BLOCK_BYTES, 1).await.unwrap(), vec![0xDD]);
        });
    }

    #[test]
    fn removed_file_handle_keeps_working_until_crash() {
        let (s, path) = disk_with_file(1, 4);
        block_on(async {
            let f = s.open(&path, true).await.unwrap();
            s.remove_file(&path).await.unwrap();
            s.sync_dir(Path::new("/d")).await.unwrap();
            assert_eq!(f.read_at(0, 2).await.unwrap(), vec![4, 4]);
            f.write_at(buf(&s, 1, 6), 0).await.unwrap();
            f.sync_data().await.unwrap();
        });
        s.crash(0, CrashMode::KeepAllUnsynced);
        assert!(s.list_files().is_empty());
    }

    #[test]
    #[should_panic(expected = "unaligned write")]
    fn unaligned_write_panics() {
        let (s, path) = disk_with_file(1, 0);
        let f = block_on(s.open(&path, true)).unwrap();
        let _ = block_on(f.write_at(buf(&s, 1, 0), 100));
    }
}
