//! Where a benchmark writes: a fresh temporary directory on a disk file system, or a
//! directory the user names (`--dir`), removed at the end unless `--keep`.
//!
//! A WAL benchmark on tmpfs measures memory, not a device, so the default location avoids
//! it: `$TMPDIR` (or `/tmp`) when that is a disk file system, else the current directory.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::{BenchError, Result};

/// File systems that keep data in memory: a benchmark there says nothing about a device.
const MEMORY_FILE_SYSTEMS: &[&str] = &["tmpfs", "ramfs", "devtmpfs"];

/// The data directory of one benchmark run.
pub struct BenchDir {
    path: PathBuf,
    /// Set when the directory is a temporary one we created (removed on drop unless kept).
    temp: Option<TempDir>,
    /// Set when `--dir` named a directory that did not exist: we created it, we remove it.
    created: bool,
    keep: bool,
    /// File system type and source device of the directory, for the report.
    pub fs: FsInfo,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FsInfo {
    pub fs_type: String,
    pub source: String,
}

impl BenchDir {
    /// Prepares the directory. A named directory must not exist, be empty, or already be a
    /// tern data directory (it then gets appended to and is never removed).
    pub fn prepare(dir: Option<&Path>, keep: bool) -> Result<BenchDir> {
        let (path, temp, created) = match dir {
            None => {
                let base = default_base();
                let temp = tempfile::Builder::new()
                    .prefix("tern-bench-")
                    .tempdir_in(&base)
                    .map_err(|e| BenchError::io(&base, e))?;
                (temp.path().to_path_buf(), Some(temp), false)
            }
            Some(d) if !d.exists() => {
                std::fs::create_dir_all(d).map_err(|e| BenchError::io(d, e))?;
                (d.to_path_buf(), None, true)
            }
            Some(d) => {
                let mut entries = std::fs::read_dir(d).map_err(|e| BenchError::io(d, e))?;
                let empty = entries.next().is_none();
                let is_data_dir = d.join(tern_engine::engine::META_FILE).is_file();
                if !empty && !is_data_dir {
                    return Err(BenchError::Arg {
                        arg: "dir",
                        why: format!(
                            "{} is neither empty nor a tern data directory; refusing to write into it",
                            d.display()
                        ),
                    });
                }
                (d.to_path_buf(), None, false)
            }
        };
        // Absolute, so that nothing below depends on the current directory (the engine's
        // directory fsync fails on a relative path: EBADF from glommio's directory open).
        let path = path.canonicalize().map_err(|e| BenchError::io(&path, e))?;
        let fs = fs_info(&path);
        if MEMORY_FILE_SYSTEMS.contains(&fs.fs_type.as_str()) {
            tracing::warn!(
                "{} is on {}: results measure memory, not a device",
                path.display(),
                fs.fs_type
            );
        }
        Ok(BenchDir {
            path,
            temp,
            created,
            keep,
            fs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when `finish` will delete the directory.
    pub fn will_remove(&self) -> bool {
        !self.keep && (self.temp.is_some() || self.created)
    }

    /// Removes the directory if it is ours and not kept; returns the path when it stays.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        let remove = self.will_remove();
        if let Some(temp) = self.temp.take() {
            if remove {
                temp.close().map_err(|e| BenchError::io(&self.path, e))?;
                return Ok(None);
            }
            return Ok(Some(temp.keep()));
        }
        if remove {
            std::fs::remove_dir_all(&self.path).map_err(|e| BenchError::io(&self.path, e))?;
            return Ok(None);
        }
        Ok(Some(self.path.clone()))
    }
}

/// `$TMPDIR` or `/tmp` unless it is in memory; then the current directory.
fn default_base() -> PathBuf {
    let tmp = std::env::temp_dir();
    let fs = fs_info(&tmp);
    if MEMORY_FILE_SYSTEMS.contains(&fs.fs_type.as_str()) {
        return PathBuf::from(".");
    }
    tmp
}

/// The file system holding `path`, from the longest matching mount point in
/// `/proc/self/mountinfo`. Unknown (empty strings) when that cannot be read.
pub fn fs_info(path: &Path) -> FsInfo {
    let Ok(canon) = path.canonicalize() else {
        return FsInfo::default();
    };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return FsInfo::default();
    };
    let mut best: Option<(usize, FsInfo)> = None;
    for line in text.lines() {
        // Fields: id parent major:minor root mount-point options [optional...] - type source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fs_type), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mount = Path::new(mount);
        if !canon.starts_with(mount) {
            continue;
        }
        let depth = mount.components().count();
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((
                depth,
                FsInfo {
                    fs_type: fs_type.to_string(),
                    source: source.to_string(),
                },
            ));
        }
    }
    best.map(|(_, f)| f).unwrap_or_default()
}

/// Asks the kernel to drop clean page-cache pages (root only). Segments are read with
/// O_DIRECT, so this mostly matters for the small index and metadata files; a failure (not
/// root, read-only /proc) is reported, never fatal.
pub fn drop_caches() -> bool {
    // Dirty pages are not dropped, so flush them first (sync(1); failure only weakens this).
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}
