//! The quarantine: every byte recovery or `tern repair` removes from a data directory is
//! copied (or, for a whole leftover file, moved) here first. One implementation and one
//! manifest format for both (docs/format.md, "Quarantine"):
//!
//! ```text
//! <data dir>/quarantine/<unix ms>-<recovery|repair>[-<n>]/
//!     <name>      the removed bytes, one file per region or file
//!     MANIFEST    one line per file, rewritten (temp + fsync + rename + dir fsync) after each:
//!                 file=<name> source=<path> offset=<o> len=<n> crc32c=<hex> reason=<why>
//!                 file=<name> source=<path> moved len=<n> reason=<why>
//!                 and what the caller adds (repair: its losses and regions)
//! ```
//!
//! Files are written through [`Storage`] with O_DIRECT, so a copy is padded with zeros to
//! whole blocks; its `len` in the manifest is the exact count of bytes that were removed.

use std::path::{Path, PathBuf};

use crate::constants::{BLOCK_BYTES, SCAN_READ_BYTES_MAX};
use crate::error::{Error, Result};
use crate::format::{align_up, crc32c_append};
use crate::recovery::now_unix_ms;
use crate::storage::{write_file_atomic, IoBuf, Storage, StorageFile};

pub const MANIFEST_FILE: &str = "MANIFEST";

/// Who removed the bytes: names the quarantine directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remover {
    Recovery,
    Repair,
}

impl Remover {
    fn name(self) -> &'static str {
        match self {
            Remover::Recovery => "recovery",
            Remover::Repair => "repair",
        }
    }
}

/// One quarantine directory, created on first use.
pub struct Quarantine {
    /// `<data dir>/quarantine`.
    base: PathBuf,
    remover: Remover,
    dir: Option<PathBuf>,
    lines: Vec<String>,
    /// Lines the caller sets (repair's losses and regions), written after `lines`.
    extra: Vec<String>,
}

impl Quarantine {
    pub fn new(base: &Path, remover: Remover) -> Self {
        Quarantine {
            base: base.to_path_buf(),
            remover,
            dir: None,
            lines: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The directory, if anything was quarantined.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    async fn ensure_dir<S: Storage>(&mut self, storage: &S) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let io = |p: &Path, e| Error::io(p, e);
        let stem = format!("{}-{}", now_unix_ms(), self.remover.name());
        let mut d = self.base.join(&stem);
        // Two runs within a millisecond (tests, a repair right after a recovery) must not
        // share a directory: each manifest describes its own files.
        let mut n = 1u32;
        while storage.exists(&d).await.map_err(|e| io(&d, e))? {
            d = self.base.join(format!("{stem}-{n}"));
            n += 1;
        }
        storage.create_dir_all(&d).await.map_err(|e| io(&d, e))?;
        storage
            .sync_dir(&self.base)
            .await
            .map_err(|e| io(&self.base, e))?;
        if let Some(parent) = self.base.parent() {
            storage.sync_dir(parent).await.map_err(|e| io(parent, e))?;
        }
        self.dir = Some(d.clone());
        Ok(d)
    }

    /// Copies `[from, to)` of `src` (clamped to its end) to `<dir>/<name>`, made durable,
    /// and records it in the manifest. Returns the copy's path.
    pub async fn copy_region<S: Storage>(
        &mut self,
        storage: &S,
        src: &Path,
        name: &str,
        from: u64,
        to: u64,
        why: &str,
    ) -> Result<PathBuf> {
        let dir = self.ensure_dir(storage).await?;
        let dst = dir.join(name);
        let input = storage
            .open(src, false)
            .await
            .map_err(|e| Error::io(src, e))?;
        let src_len = input.len().await.map_err(|e| Error::io(src, e))?;
        let to = to.min(src_len);
        let out = storage
            .create_new(&dst)
            .await
            .map_err(|e| Error::io(&dst, e))?;
        let mut crc = 0u32;
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(SCAN_READ_BYTES_MAX as u64) as usize;
            let bytes = input.read_at(pos, n).await.map_err(|e| Error::io(src, e))?;
            if bytes.is_empty() {
                break;
            }
            crc = crc32c_append(crc, &bytes);
            // O_DIRECT writes whole blocks: the last one is padded with zeros.
            let padded = align_up(bytes.len() as u64, BLOCK_BYTES) as usize;
            let mut buf = storage.alloc_buf(padded);
            buf.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
            buf.as_bytes_mut()[bytes.len()..padded].fill(0);
            buf.trim_to(padded);
            out.write_at(buf, pos - from)
                .await
                .map_err(|e| Error::io(&dst, e))?;
            pos += bytes.len() as u64;
        }
        input.close().await.map_err(|e| Error::io(src, e))?;
        out.sync_data().await.map_err(|e| Error::io(&dst, e))?;
        out.close().await.map_err(|e| Error::io(&dst, e))?;
        storage
            .sync_dir(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        self.lines.push(format!(
            "file={name} source={} offset={from} len={} crc32c={crc:08x} reason={}",
            src.display(),
            pos - from,
            one_line(why)
        ));
        self.write_manifest(storage).await?;
        Ok(dst)
    }

    /// Copies the whole of `src` as `shard-<k>-<its file name>`.
    pub async fn copy_file<S: Storage>(
        &mut self,
        storage: &S,
        src: &Path,
        shard: u32,
        why: &str,
    ) -> Result<PathBuf> {
        let name = format!(
            "shard-{shard}-{}",
            src.file_name()
                .map_or("file".into(), |n| n.to_string_lossy().into_owned())
        );
        self.copy_region(storage, src, &name, 0, u64::MAX, why)
            .await
    }

    /// Moves `src` into the quarantine (a rename: no extra space, which matters when the
    /// file is what filled the disk) and fsyncs both directories.
    pub async fn move_file<S: Storage>(
        &mut self,
        storage: &S,
        src: &Path,
        name: &str,
        why: &str,
    ) -> Result<()> {
        let dir = self.ensure_dir(storage).await?;
        let dst = dir.join(name);
        let f = storage
            .open(src, false)
            .await
            .map_err(|e| Error::io(src, e))?;
        let len = f.len().await.map_err(|e| Error::io(src, e))?;
        f.close().await.map_err(|e| Error::io(src, e))?;
        storage
            .rename(src, &dst)
            .await
            .map_err(|e| Error::io(src, e))?;
        storage
            .sync_dir(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        if let Some(parent) = src.parent() {
            storage
                .sync_dir(parent)
                .await
                .map_err(|e| Error::io(parent, e))?;
        }
        self.lines.push(format!(
            "file={name} source={} moved len={len} reason={}",
            src.display(),
            one_line(why)
        ));
        self.write_manifest(storage).await
    }

    /// Sets the caller's own manifest lines (replacing earlier ones) and rewrites the
    /// manifest, if the quarantine holds anything.
    pub async fn set_extra_lines<S: Storage>(
        &mut self,
        storage: &S,
        lines: Vec<String>,
    ) -> Result<()> {
        self.extra = lines;
        if self.dir.is_none() {
            return Ok(());
        }
        self.write_manifest(storage).await
    }

    async fn write_manifest<S: Storage>(&self, storage: &S) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut text = format!(
            "# tern {} at unix ms {}\n",
            self.remover.name(),
            now_unix_ms()
        );
        for l in self.lines.iter().chain(&self.extra) {
            text.push_str(l);
            text.push('\n');
        }
        let path = dir.join(MANIFEST_FILE);
        write_file_atomic(storage, &path, text.as_bytes())
            .await
            .map_err(|e| Error::io(&path, e))
    }
}

/// A manifest line holds one reason: newlines would split it.
fn one_line(why: &str) -> String {
    why.replace('\n', " ")
}
