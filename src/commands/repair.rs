//! `tern repair`, `tern rebuild-index`, `tern inspect-index`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use tern_engine::format::{RecordKind, SealedIndex};
use tern_engine::storage::dma::DmaStorage;
use tern_engine::verify::{
    analyze_segment, compare_index, prev_last_seq, read_layout, rebuild_indexes, repair_dir,
    segment_bytes_total, RepairOptions,
};

use super::emit;
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::progress::Progress;
use crate::say;
use crate::target::{block_on, resolve, Kind};
use crate::Common;

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Data directory, shard directory or one segment file of a stopped node.
    #[arg(long)]
    pub path: PathBuf,
    /// Also cut corrupt records out of the middle of the log (rewriting the segment without
    /// them, and cutting each group's log at its first hole). Lists every loss.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Only say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn repair(args: RepairArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    if target.kind == Kind::Index {
        return Err(CliError::Usage(format!(
            "{}: `tern repair` takes a data directory or a segment; use `tern rebuild-index` for indexes",
            args.path.display()
        )));
    }
    let root = target.require_root("repair")?.to_path_buf();
    // A dry run only reads: it works beside other readers and on read-only media.
    let _lock = if args.dry_run {
        target.lock_shared()?
    } else {
        target.lock()?
    };
    let layout = read_layout(&root)?;
    let progress = Progress::new(segment_bytes_total(&layout), args.common.json, "repairing");
    let opts = RepairOptions {
        skip_corrupt: args.skip_corrupt,
        dry_run: args.dry_run,
        only_shard: target.shard,
        only_segment: if target.kind == Kind::Segment {
            target.id
        } else {
            None
        },
    };
    let report = block_on({
        let root = root.clone();
        async move {
            let r = repair_dir(&DmaStorage, &root, &opts, &mut |n| progress.add(n)).await;
            progress.finish();
            r
        }
    })??;
    let pending = report.actions.iter().any(|a| a.status != "done");
    let clean = report.remaining.is_empty() && !pending;
    emit(args.common.json, &report, || {
        let verb = if report.dry_run {
            "repair --dry-run"
        } else {
            "repair"
        };
        say!("{verb} {}", report.path.display())?;
        if report.actions.is_empty() {
            say!("  nothing to repair")?;
        }
        for a in &report.actions {
            let at = a
                .offset
                .map_or(String::new(), |o| format!(" at offset {o}"));
            let len = a.bytes.map_or(String::new(), |b| format!(" ({b} bytes)"));
            say!(
                "  [{}] {:?} {}{at}{len}: {}",
                a.status,
                a.kind,
                a.file.display(),
                a.reason
            )?;
        }
        for r in &report.regions {
            let who = match (r.group, r.index) {
                (Some(g), Some(i)) => format!(", first bad record group {g} index {i}"),
                _ => String::new(),
            };
            say!(
                "  removed region: shard {} segment {} offset {} ({} bytes): {}{who}",
                r.shard,
                r.segment,
                r.offset,
                r.bytes,
                r.reason
            )?;
        }
        for l in &report.losses {
            say!(
                "  LOSS: shard {} group {} entries {}..={}: {}",
                l.shard,
                l.group,
                l.first_index,
                l.last_index,
                l.why
            )?;
        }
        if let Some(q) = &report.quarantine {
            say!(
                "  removed bytes and files kept in {} (see MANIFEST)",
                q.display()
            )?;
        }
        for p in &report.remaining {
            say!("  remaining: {p}")?;
        }
        if pending
            && !args.skip_corrupt
            && report
                .actions
                .iter()
                .any(|a| a.status == "needs --skip-corrupt")
        {
            say!("  some damage needs --skip-corrupt, which loses the records listed above")?;
        }
        say!(
            "result: {}",
            if report.dry_run {
                if clean {
                    "nothing to do"
                } else {
                    "work to do (dry run: nothing changed)"
                }
            } else if clean {
                "repaired: verify-data is clean"
            } else {
                "problems remain"
            }
        )?;
        Ok(())
    })?;
    Ok(if clean { EXIT_CLEAN } else { EXIT_PROBLEMS })
}

#[derive(Args, Debug)]
pub struct RebuildIndexArgs {
    /// Data directory of a stopped node.
    #[arg(long)]
    pub path: PathBuf,
    /// Only say which indexes would be rebuilt.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn rebuild_index(args: RebuildIndexArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    let root = target.require_root("rebuild-index")?.to_path_buf();
    let _lock = if args.dry_run {
        target.lock_shared()?
    } else {
        target.lock()?
    };
    let layout = read_layout(&root)?;
    let progress = Progress::new(segment_bytes_total(&layout), args.common.json, "indexing");
    let dry = args.dry_run;
    let actions = block_on({
        let root = root.clone();
        async move {
            let r = rebuild_indexes(&DmaStorage, &root, dry, &mut |n| progress.add(n)).await;
            progress.finish();
            r
        }
    })??;
    let skipped = actions.iter().filter(|a| a.action == "skipped").count();
    let rebuilt = actions
        .iter()
        .filter(|a| a.action != "ok" && a.action != "skipped")
        .count();
    #[derive(Serialize)]
    struct Out<'a> {
        path: &'a PathBuf,
        indexes: &'a [tern_engine::verify::IndexAction],
    }
    emit(
        args.common.json,
        &Out {
            path: &root,
            indexes: &actions,
        },
        || {
            say!("rebuild-index {}", root.display())?;
            for a in &actions {
                say!("  [{}] {}: {}", a.action, a.file.display(), a.reason)?;
            }
            say!(
            "result: {rebuilt} rebuilt, {} already correct, {skipped} skipped (damaged segments: run `tern repair` first)",
            actions.iter().filter(|a| a.action == "ok").count()
        )?;
            Ok(())
        },
    )?;
    Ok(if skipped == 0 {
        EXIT_CLEAN
    } else {
        EXIT_PROBLEMS
    })
}

#[derive(Args, Debug)]
pub struct InspectIndexArgs {
    /// Sealed-segment index file (`<data dir>/shard-<k>/<id>.idx`).
    #[arg(long)]
    pub path: PathBuf,
    /// List every index entry.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Serialize)]
struct IndexGroup {
    group: u64,
    entries: u64,
    first_index: u64,
    last_index: u64,
}

#[derive(Debug, Serialize)]
struct InspectReport {
    file: PathBuf,
    valid: bool,
    error: Option<String>,
    segment: Option<u64>,
    data_end: Option<u64>,
    first_batch_seq: Option<u64>,
    last_batch_seq: Option<u64>,
    segment_bytes: Option<u64>,
    entries: usize,
    kinds: BTreeMap<&'static str, u64>,
    groups: Vec<IndexGroup>,
    /// `matches`, `mismatch: ...`, or `segment missing`.
    segment_check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries_detail: Option<Vec<String>>,
}

pub fn inspect_index(args: InspectIndexArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    if target.kind != Kind::Index {
        return Err(CliError::Usage(format!(
            "{}: `tern inspect-index` takes an index file (<id>.idx)",
            args.path.display()
        )));
    }
    let _lock = target.lock_shared()?;
    let bytes = std::fs::read(&target.path).map_err(|e| CliError::io(&target.path, e))?;
    let mut report = InspectReport {
        file: target.path.clone(),
        valid: false,
        error: None,
        segment: None,
        data_end: None,
        first_batch_seq: None,
        last_batch_seq: None,
        segment_bytes: None,
        entries: 0,
        kinds: BTreeMap::new(),
        groups: Vec::new(),
        segment_check: "not checked".into(),
        entries_detail: None,
    };
    match SealedIndex::decode(&bytes) {
        Err(e) => report.error = Some(format!("index unreadable: {e}")),
        Ok(idx) => {
            report.valid = true;
            let h = idx.header;
            report.segment = Some(h.segment_id);
            report.data_end = Some(h.data_end);
            report.first_batch_seq = Some(h.first_batch_seq);
            report.last_batch_seq = Some(h.last_batch_seq);
            report.segment_bytes = Some(h.segment_bytes);
            report.entries = idx.entries.len();
            let mut groups: BTreeMap<u64, IndexGroup> = BTreeMap::new();
            for e in &idx.entries {
                let kind = RecordKind::from_u16(e.kind).map_or("unknown", |k| k.name());
                *report.kinds.entry(kind).or_insert(0) += 1;
                if e.kind == RecordKind::Entry as u16 {
                    let g = groups.entry(e.group).or_insert(IndexGroup {
                        group: e.group,
                        entries: 0,
                        first_index: e.index,
                        last_index: e.index,
                    });
                    g.entries += 1;
                    g.first_index = g.first_index.min(e.index);
                    g.last_index = g.last_index.max(e.index);
                }
            }
            report.groups = groups.into_values().collect();
            if args.verbose {
                report.entries_detail = Some(
                    idx.entries
                        .iter()
                        .map(|e| {
                            format!(
                                "offset {} kind {} group {} term {} index {} aux {} bytes {}",
                                e.offset,
                                RecordKind::from_u16(e.kind).map_or("unknown", |k| k.name()),
                                e.group,
                                e.term,
                                e.index,
                                e.aux,
                                e.payload_len
                            )
                        })
                        .collect(),
                );
            }
            let seg = target.path.with_extension("wal");
            report.segment_check = if seg.exists() {
                let id = target.id.unwrap_or(0);
                let shard = target.shard;
                let a = block_on({
                    let seg = seg.clone();
                    async move {
                        let dir = seg.parent().unwrap_or(Path::new("."));
                        let prev = prev_last_seq(&DmaStorage, dir, id).await?;
                        analyze_segment(&DmaStorage, &seg, id, shard, prev, false).await
                    }
                })??;
                match compare_index(&idx, &a) {
                    None => "matches its segment".into(),
                    Some((off, msg)) => {
                        let at = off.map_or(String::new(), |o| format!(" (segment offset {o})"));
                        format!("mismatch{at}: {msg}")
                    }
                }
            } else {
                "segment file missing".into()
            };
        }
    }
    let ok = report.valid && report.segment_check == "matches its segment";
    emit(args.common.json, &report, || {
        say!("inspect-index {}", report.file.display())?;
        if let Some(e) = &report.error {
            say!("  {e}")?;
        } else {
            say!(
                "  segment {} data_end {} batches {}..={} segment_bytes {}",
                report.segment.unwrap_or(0),
                report.data_end.unwrap_or(0),
                report.first_batch_seq.unwrap_or(0),
                report.last_batch_seq.unwrap_or(0),
                report.segment_bytes.unwrap_or(0)
            )?;
            let kinds: Vec<String> = report
                .kinds
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            say!("  {} entries: {}", report.entries, kinds.join(", "))?;
            for g in &report.groups {
                say!(
                    "  group {}: {} entries, index {}..={}",
                    g.group,
                    g.entries,
                    g.first_index,
                    g.last_index
                )?;
            }
            if let Some(d) = &report.entries_detail {
                for l in d {
                    say!("  {l}")?;
                }
            }
            say!("  segment check: {}", report.segment_check)?;
        }
        say!("result: {}", if ok { "ok" } else { "problems" })?;
        Ok(())
    })?;
    Ok(if ok { EXIT_CLEAN } else { EXIT_PROBLEMS })
}
