//! `tern rebuild-index`: rebuilds the index of cleanly sealed segments.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::analysis::{analyze_shard, read_layout};
use super::check::{build_index, check_index};
use crate::error::{Error, Result};
use crate::format::segment::index_file_name;
use crate::storage::{write_file_atomic, Storage};

// ---------------------------------------------------------------------------------------
// rebuild-index

#[derive(Debug, Clone, Serialize)]
pub struct IndexAction {
    pub shard: u32,
    pub segment: u64,
    pub file: PathBuf,
    /// `ok`, `rebuilt`, `would-rebuild`, `skipped`
    pub action: &'static str,
    pub reason: String,
}

/// Rebuilds the index of every cleanly sealed segment whose index is missing, unreadable or
/// does not match the segment. Damaged segments are skipped and reported (repair them first).
pub async fn rebuild_indexes<S: Storage>(
    storage: &S,
    root: &Path,
    dry_run: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<IndexAction>> {
    let layout = read_layout(root)?;
    let mut out = Vec::new();
    for (&k, dir) in &layout.shards {
        let sa = analyze_shard(storage, k, dir, false, progress).await?;
        for (i, a) in sa.segments.iter().enumerate() {
            let ipath = dir.join(index_file_name(a.id));
            let sealed = a.sealed_next().is_some();
            let act = |action, reason: String| IndexAction {
                shard: k,
                segment: a.id,
                file: ipath.clone(),
                action,
                reason,
            };
            if !a.damages.is_empty() || a.bad_header().is_some() || (!sealed && !sa.is_last(i)) {
                out.push(act(
                    "skipped",
                    "segment is damaged: run `tern repair` first".into(),
                ));
                continue;
            }
            if !sealed {
                continue;
            }
            let reason = if sa.index_ids.contains(&a.id) {
                match check_index(storage, &ipath, a).await? {
                    None => {
                        out.push(act("ok", "index matches the segment".into()));
                        continue;
                    }
                    Some(p) => p.message,
                }
            } else {
                "index missing".to_string()
            };
            if dry_run {
                out.push(act("would-rebuild", reason));
                continue;
            }
            let idx = build_index(a);
            write_file_atomic(storage, &ipath, &idx.encode())
                .await
                .map_err(|e| Error::io(&ipath, e))?;
            out.push(act("rebuilt", reason));
        }
    }
    Ok(out)
}
