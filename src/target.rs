//! What `--path` names (data directory, shard directory, segment or index file), the lock of
//! the data directory around it, and the single executor offline commands run on.

use std::future::Future;
use std::path::{Path, PathBuf};

use tern_engine::engine::{lock_dir, lock_dir_shared, DirLock, SharedLock};
use tern_engine::format::segment::{parse_index_file_name, parse_segment_file_name};
use tern_engine::verify::{is_data_dir, read_layout};

use crate::error::{CliError, CliResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DataDir,
    ShardDir,
    Segment,
    Index,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub path: PathBuf,
    /// The data directory holding `path`, if it is inside one.
    pub root: Option<PathBuf>,
    pub shard: Option<u32>,
    /// Segment (or index) id for files.
    pub id: Option<u64>,
}

fn shard_of(dir: &Path) -> Option<u32> {
    let name = dir.file_name()?.to_str()?;
    let k: u32 = name.strip_prefix("shard-")?.parse().ok()?;
    (name == format!("shard-{k}")).then_some(k)
}

/// Works out what `path` is. A directory must be a tern data directory or one of its
/// shard directories; a file must be a segment (`.wal`) or an index (`.idx`).
pub fn resolve(path: &Path) -> CliResult<Target> {
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "{}: no such file or directory",
            path.display()
        )));
    }
    // glommio opens directories for fsync by absolute path only.
    let path = &absolute(path)?;
    if path.is_dir() {
        if is_data_dir(path) {
            return Ok(Target {
                kind: Kind::DataDir,
                path: path.to_path_buf(),
                root: Some(path.to_path_buf()),
                shard: None,
                id: None,
            });
        }
        if let (Some(k), Some(parent)) = (shard_of(path), path.parent()) {
            if is_data_dir(parent) {
                return Ok(Target {
                    kind: Kind::ShardDir,
                    path: path.to_path_buf(),
                    root: Some(parent.to_path_buf()),
                    shard: Some(k),
                    id: None,
                });
            }
        }
        // read_layout explains why (empty, no ENGINE file).
        read_layout(path)?;
        return Err(CliError::Usage(format!(
            "{} is not a tern data directory",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (kind, id) = if let Some(id) = parse_segment_file_name(&name) {
        (Kind::Segment, id)
    } else if let Some(id) = parse_index_file_name(&name) {
        (Kind::Index, id)
    } else {
        return Err(CliError::Usage(format!(
            "{}: not a segment (<id>.wal) or index (<id>.idx) file",
            path.display()
        )));
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shard = shard_of(parent);
    let root = shard
        .and(parent.parent())
        .filter(|r| is_data_dir(r))
        .map(Path::to_path_buf);
    Ok(Target {
        kind,
        path: path.to_path_buf(),
        shard: root.as_ref().and(shard),
        root,
        id: Some(id),
    })
}

impl Target {
    /// The data directory, or a usage error for a loose file.
    pub fn require_root(&self, command: &str) -> CliResult<&Path> {
        self.root.as_deref().ok_or_else(|| {
            CliError::Usage(format!(
                "{}: `tern {command}` needs a file inside a tern data directory (<dir>/shard-<k>/)",
                self.path.display()
            ))
        })
    }

    /// Takes the data directory's lock exclusively, for a command that writes (refusing
    /// while a node or any other command holds it). Loose files (a segment copied out of a
    /// data directory) need no lock.
    pub fn lock(&self) -> CliResult<Option<DirLock>> {
        match &self.root {
            Some(root) => Ok(Some(lock_dir(root)?)),
            None => Ok(None),
        }
    }

    /// Takes the data directory's lock shared, for a command that only reads: readers run
    /// side by side and only a writer excludes them. On a read-only file system without a
    /// LOCK file no lock can be taken (nor can anything write there): says so on stderr
    /// and goes on.
    pub fn lock_shared(&self) -> CliResult<Option<DirLock>> {
        let Some(root) = &self.root else {
            return Ok(None);
        };
        match lock_dir_shared(root)? {
            SharedLock::Held(l) => Ok(Some(l)),
            SharedLock::NotTaken { why } => {
                eprintln!(
                    "note: no lock taken on {}: its LOCK file is missing and cannot be created ({why}); reading without one",
                    root.display()
                );
                Ok(None)
            }
        }
    }
}

/// Runs an offline command's future on one small glommio executor (DMA storage needs one).
pub fn block_on<T: 'static>(f: impl Future<Output = T> + 'static) -> CliResult<T> {
    let ex = glommio::LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .make()
        .map_err(|e| CliError::io("glommio executor", std::io::Error::other(e.to_string())))?;
    Ok(ex.run(f))
}

/// `path` made absolute (and free of `..`), for glommio's directory handles.
pub fn absolute(path: &Path) -> CliResult<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| CliError::io(path, e))
}

/// Creates `path` if needed and returns it absolute.
pub fn create_absolute(path: &Path) -> CliResult<PathBuf> {
    std::fs::create_dir_all(path).map_err(|e| CliError::io(path, e))?;
    absolute(path)
}
