//! `tern scan`: one segment read through the engine's scanner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use tern_engine::format::RecordKind;
use tern_engine::repaired::{DamagedEntry, EntryDamage};
use tern_engine::scan::{Damage, ScanStop};
use tern_engine::storage::dma::DmaStorage;
use tern_engine::torn_tail::DamageClass;
use tern_engine::verify::{
    analyze_lone_segment, analyze_shard, damaged_entry_verdicts, SegmentAnalysis,
};

use super::emit;
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::say;
use crate::target::{block_on, resolve, Kind};
use crate::Common;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Segment file (`<data dir>/shard-<k>/<id>.wal`).
    #[arg(long)]
    pub path: PathBuf,
    /// List every record with its checksum status, and every damaged region.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Serialize)]
struct GroupRange {
    group: u64,
    entries: u64,
    first_index: u64,
    last_index: u64,
    first_term: u64,
    last_term: u64,
}

#[derive(Debug, Serialize)]
struct RecordLine {
    offset: u64,
    kind: &'static str,
    group: u64,
    term: u64,
    index: u64,
    aux: u64,
    payload_bytes: u32,
    batch_seq: u64,
    checksum: &'static str,
}

#[derive(Debug, Serialize)]
struct DamageLine {
    offset: u64,
    record_offset: u64,
    end: u64,
    reason: String,
    group: Option<u64>,
    index: Option<u64>,
    /// `torn-tail` (never acknowledged) or `corruption`; for a damaged entry record in an
    /// acknowledged batch (kept, to be repaired from peers: `tern_engine::repaired`), its
    /// verdict: `repaired`, `dead` (both harmless), `unrepaired` or `implausible`.
    class: &'static str,
    later_batches: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct ScanReport {
    file: PathBuf,
    segment: u64,
    shard: Option<u32>,
    header: Option<String>,
    file_bytes: u64,
    batches: u64,
    records: u64,
    first_batch_seq: Option<u64>,
    last_batch_seq: Option<u64>,
    /// `sealed`, `clean-end`, `end-of-file`, `damaged`, `bad-header`
    end: &'static str,
    sealed_next_segment: Option<u64>,
    /// Offset just past the last valid batch: where the writer resumes.
    valid_end: u64,
    /// Offset of the last valid record's header.
    last_valid_record_offset: Option<u64>,
    groups: Vec<GroupRange>,
    damage: Vec<DamageLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records_detail: Option<Vec<RecordLine>>,
}

fn stop_name(stop: &ScanStop) -> &'static str {
    match stop {
        ScanStop::Sealed { .. } => "sealed",
        ScanStop::CleanEnd => "clean-end",
        ScanStop::EndOfFile => "end-of-file",
        ScanStop::Damaged(_) => "damaged",
        ScanStop::BadHeader(_) => "bad-header",
    }
}

fn damage_lines(a: &SegmentAnalysis, is_last: bool) -> Vec<DamageLine> {
    a.damages
        .iter()
        .zip(a.damage_classes(is_last))
        .map(|(d, class): (&Damage, DamageClass)| DamageLine {
            offset: d.offset,
            record_offset: d.record_offset,
            end: d.garbage_end,
            reason: d.reason.to_string(),
            group: d.group,
            index: d.index,
            class: class.name(),
            later_batches: d.later_batches.iter().map(|b| b.seq).collect(),
        })
        .collect()
}

/// One line per damaged entry record of segment `a` the scan passed over, with its verdict.
fn entry_lines(a: &SegmentAnalysis, verdicts: &[(DamagedEntry, EntryDamage)]) -> Vec<DamageLine> {
    a.records
        .iter()
        .filter(|r| r.damaged)
        .map(|r| {
            let verdict = verdicts
                .iter()
                .find(|(e, _)| (e.segment, e.offset) == (a.id, r.offset))
                .map_or(EntryDamage::Unrepaired, |(_, v)| *v);
            DamageLine {
                offset: r.batch_offset,
                record_offset: r.offset,
                end: r.offset + r.header.record_bytes(),
                reason: "entry record fails its checksum in an acknowledged batch".into(),
                group: Some(r.header.group),
                index: Some(r.header.index),
                class: verdict.name(),
                later_batches: Vec::new(),
            }
        })
        .collect()
}

pub fn scan(args: ScanArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    if target.kind != Kind::Segment {
        return Err(CliError::Usage(format!(
            "{}: `tern scan` takes one segment file (<id>.wal); use `tern verify-data` for a directory",
            args.path.display()
        )));
    }
    let _lock = target.lock_shared()?;
    let id = target.id.unwrap_or(0);
    let path = target.path.clone();
    let shard = target.shard;
    let (a, place) = block_on({
        let path = path.clone();
        async move {
            let dir = path.parent().unwrap_or(Path::new("."));
            analyze_lone_segment(&DmaStorage, dir, id, shard).await
        }
    })??;
    let is_last = place.is_last;
    // Damaged entry records the scan passed over are judged with the whole shard (a later
    // Repair record may supersede one), by the rule recovery and verify-data use.
    let verdicts = if a.records.iter().any(|r| r.damaged) {
        block_on({
            let path = path.clone();
            async move {
                let dir = path.parent().unwrap_or(Path::new("."));
                let sa =
                    analyze_shard(&DmaStorage, shard.unwrap_or(0), dir, false, &mut |_| {}).await?;
                Ok::<_, tern_engine::Error>(damaged_entry_verdicts(&sa))
            }
        })??
    } else {
        Vec::new()
    };
    let mut groups: BTreeMap<u64, GroupRange> = BTreeMap::new();
    for r in a.records.iter().filter(|r| r.kind() == RecordKind::Entry) {
        let h = &r.header;
        let g = groups.entry(h.group).or_insert(GroupRange {
            group: h.group,
            entries: 0,
            first_index: h.index,
            last_index: h.index,
            first_term: h.term,
            last_term: h.term,
        });
        g.entries += 1;
        g.first_index = g.first_index.min(h.index);
        g.last_index = g.last_index.max(h.index);
        g.first_term = g.first_term.min(h.term);
        g.last_term = g.last_term.max(h.term);
    }
    let detail = args.verbose.then(|| {
        a.records
            .iter()
            .map(|r| RecordLine {
                offset: r.offset,
                kind: r.kind().name(),
                group: r.header.group,
                term: r.header.term,
                index: r.header.index,
                aux: r.header.aux,
                payload_bytes: r.header.payload_len,
                batch_seq: r.header.batch_seq,
                // A damaged entry the scan kept (see the damage lines for its verdict).
                checksum: if r.damaged { "bad" } else { "ok" },
            })
            .collect::<Vec<_>>()
    });
    let header = match (&a.scan.stop, a.scan.header) {
        (ScanStop::BadHeader(e), _) => Some(format!("unreadable: {e}")),
        (_, Some(h)) => Some(format!(
            "segment {} shard {} segment_bytes {} first_batch_seq {} created_unix_ms {}",
            h.segment_id, h.shard, h.segment_bytes, h.first_batch_seq, h.created_unix_ms
        )),
        _ => None,
    };
    let report = ScanReport {
        file: path.clone(),
        segment: id,
        shard,
        header,
        file_bytes: a.scan.file_len,
        batches: a.batches.len() as u64,
        records: a.records.len() as u64,
        first_batch_seq: a.scan.first_batch_seq,
        last_batch_seq: a.scan.last_batch_seq,
        end: stop_name(&a.scan.stop),
        sealed_next_segment: a.sealed_next(),
        valid_end: a.scan.valid_end,
        last_valid_record_offset: a.records.last().map(|r| r.offset),
        groups: groups.into_values().collect(),
        damage: damage_lines(&a, is_last)
            .into_iter()
            .chain(entry_lines(&a, &verdicts))
            .collect(),
        records_detail: detail,
    };
    let harmless = |d: &DamageLine| d.class == "repaired" || d.class == "dead";
    let bad = report.damage.iter().any(|d| !harmless(d)) || report.end == "bad-header";
    emit(args.common.json, &report, || {
        say!("scan {}", report.file.display())?;
        if let Some(h) = &report.header {
            say!("  header: {h}")?;
        }
        say!(
            "  {} records in {} batches (batch seq {:?}..={:?}), {} file bytes",
            report.records,
            report.batches,
            report.first_batch_seq,
            report.last_batch_seq,
            report.file_bytes
        )?;
        match report.sealed_next_segment {
            Some(n) => say!("  end: sealed (next segment {n})")?,
            None => say!("  end: {}", report.end)?,
        }
        say!(
            "  last valid offset: {} (last valid record at {})",
            report.valid_end,
            report
                .last_valid_record_offset
                .map_or("-".to_string(), |o| o.to_string())
        )?;
        for g in &report.groups {
            say!(
                "  group {}: {} entries, index {}..={}, term {}..={}",
                g.group,
                g.entries,
                g.first_index,
                g.last_index,
                g.first_term,
                g.last_term
            )?;
        }
        if let Some(d) = &report.records_detail {
            say!(
                "  {:>10} {:>13} {:>8} {:>6} {:>10} {:>8} checksum",
                "offset",
                "kind",
                "group",
                "term",
                "index",
                "bytes"
            )?;
            for r in d {
                say!(
                    "  {:>10} {:>13} {:>8} {:>6} {:>10} {:>8} {}",
                    r.offset,
                    r.kind,
                    r.group,
                    r.term,
                    r.index,
                    r.payload_bytes,
                    r.checksum
                )?;
            }
        }
        for d in &report.damage {
            let who = match (d.group, d.index) {
                (Some(g), Some(i)) => format!(", group {g} index {i}"),
                _ => String::new(),
            };
            say!(
                "  BAD {} at offset {} (bytes {}..{}{who}): {}",
                d.class,
                d.record_offset,
                d.offset,
                d.end,
                d.reason
            )?;
        }
        say!("result: {}", if bad { "damaged" } else { "clean" })?;
        Ok(())
    })?;
    Ok(if bad { EXIT_PROBLEMS } else { EXIT_CLEAN })
}
