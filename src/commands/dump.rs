//! `tern dump`: records of a data directory, shard directory or segment, read through the
//! engine's scanner. A dump narrowed to a group (and an index range) reads only the group's
//! shard, and of that only the segments whose sealed index lists a matching record: a
//! sealed index is checksummed and written from the segment it describes, so a segment it
//! says holds nothing of the group is skipped unread. Segments without a usable index (the
//! open segment, a missing or corrupt index) are scanned in full.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use tern_engine::engine::shard_dir;
use tern_engine::format::segment::{index_file_name, parse_segment_file_name, segment_file_name};
use tern_engine::format::{RecordKind, SealedIndex};
use tern_engine::repaired::EntryDamage;
use tern_engine::scan::{scan_segment_placed, ScanStop, ScannedRecord};
use tern_engine::shard_for_group;
use tern_engine::storage::dma::DmaStorage;
use tern_engine::verify::read_layout;
use tern_engine::verify::{analyze_shard, damaged_entry_verdicts, segment_place};

use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::output::flush;
use crate::say;
use crate::target::{block_on, resolve, Kind};
use crate::Common;

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Data directory, shard directory or segment file.
    #[arg(long)]
    pub path: PathBuf,
    /// Only records of this group (an error if a directory holds no record of it).
    #[arg(long)]
    pub group: Option<u64>,
    /// Only entries with index >= this (hides control records).
    #[arg(long)]
    pub from: Option<u64>,
    /// Only entries with index <= this (hides control records).
    #[arg(long)]
    pub to: Option<u64>,
    /// Payload bytes to preview per record.
    #[arg(long, default_value_t = 16)]
    pub preview_bytes: usize,
    #[command(flatten)]
    pub common: Common,
}

/// Which records a dump prints.
#[derive(Debug, Clone, Copy)]
struct Filter {
    group: Option<u64>,
    from: Option<u64>,
    to: Option<u64>,
}

impl Filter {
    fn by_index(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    fn wants(&self, kind: RecordKind, group: u64, index: u64) -> bool {
        if kind == RecordKind::BatchHeader || self.group.is_some_and(|g| g != group) {
            return false;
        }
        !self.by_index()
            || (kind == RecordKind::Entry
                && self.from.is_none_or(|f| index >= f)
                && self.to.is_none_or(|t| index <= t))
    }

    fn narrowed(&self) -> bool {
        self.group.is_some() || self.by_index()
    }
}

#[derive(Debug, Serialize)]
struct DumpRecord<'a> {
    file: &'a str,
    offset: u64,
    kind: &'static str,
    group: u64,
    term: u64,
    index: u64,
    aux: u64,
    batch_seq: u64,
    payload_bytes: u32,
    preview_hex: String,
    preview_text: String,
    /// The record fails its checksum in an acknowledged batch (its fields are as read;
    /// `tern verify-data` says whether a later Repair record supersedes it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    damaged: bool,
}

fn preview(payload: &[u8], n: usize) -> (String, String) {
    let p = &payload[..payload.len().min(n)];
    let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = p
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let more = if payload.len() > n { "…" } else { "" };
    (format!("{hex}{more}"), format!("{text}{more}"))
}

/// One segment to read, and whether its sealed index already shows records of the group.
struct Planned {
    path: PathBuf,
    id: u64,
    /// The sealed index lists a record of the asked group (outside the range, perhaps).
    group_in_index: bool,
}

/// What the sealed index of `seg` says about the filter: `None` if there is no usable index
/// (read the segment), else (any record of the group, any record the filter wants).
fn index_says(seg: &Path, id: u64, filter: &Filter) -> Option<(bool, bool)> {
    let idx = seg.with_file_name(index_file_name(id));
    let bytes = std::fs::read(&idx).ok()?;
    let index = SealedIndex::decode(&bytes).ok()?;
    if index.header.segment_id != id {
        return None;
    }
    let mut group_seen = false;
    let mut wanted = false;
    for e in &index.entries {
        let Ok(kind) = RecordKind::from_u16(e.kind) else {
            // A kind this build does not know: let the scanner judge the segment.
            return None;
        };
        group_seen |= filter.group.is_some_and(|g| g == e.group);
        wanted |= filter.wants(kind, e.group, e.index);
        if wanted && (group_seen || filter.group.is_none()) {
            break;
        }
    }
    Some((group_seen, wanted))
}

fn segment_ids(dir: &Path) -> CliResult<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| CliError::io(dir, e))?
        .flatten()
        .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Segments to read, and whether the skipped ones' indexes showed records of the group.
fn plan(target: &crate::target::Target, filter: &Filter) -> CliResult<(Vec<Planned>, bool)> {
    let root = target.require_root("dump")?;
    let layout = read_layout(root)?;
    // Placement is a function of the shard count: with a usable ENGINE file a group's
    // records can only be in its own shard.
    let home = match (&layout.meta, filter.group) {
        (Ok(meta), Some(g)) => Some(shard_for_group(g, meta.shards)),
        _ => None,
    };
    let mut planned = Vec::new();
    let mut group_in_skipped = false;
    for k in layout.shards.keys() {
        if target.shard.is_some_and(|s| s != *k) || home.is_some_and(|h| h != *k) {
            continue;
        }
        let dir = shard_dir(root, *k);
        for id in segment_ids(&dir)? {
            let path = dir.join(segment_file_name(id));
            let says = if filter.narrowed() {
                index_says(&path, id, filter)
            } else {
                None
            };
            match says {
                Some((group_seen, false)) => group_in_skipped |= group_seen,
                Some((group_seen, true)) => planned.push(Planned {
                    path,
                    id,
                    group_in_index: group_seen,
                }),
                None => planned.push(Planned {
                    path,
                    id,
                    group_in_index: false,
                }),
            }
        }
    }
    Ok((planned, group_in_skipped))
}

/// Prints records as they are scanned. Printing stops at the first failed write; the error
/// is returned once the scan of the current segment ends.
struct Printer {
    json: bool,
    preview_bytes: usize,
    printed: u64,
    failed: Option<CliError>,
}

impl Printer {
    fn record(&mut self, file: &str, r: &ScannedRecord<'_>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.try_record(file, r) {
            self.failed = Some(e);
        }
    }

    fn try_record(&mut self, file: &str, r: &ScannedRecord<'_>) -> CliResult<()> {
        let h = &r.header;
        let (hex, text) = preview(r.payload, self.preview_bytes);
        let rec = DumpRecord {
            file,
            offset: r.offset,
            kind: h.kind().name(),
            group: h.group,
            term: h.term,
            index: h.index,
            aux: h.aux,
            batch_seq: h.batch_seq,
            payload_bytes: h.payload_len,
            preview_hex: hex,
            preview_text: text,
            damaged: r.damaged,
        };
        if self.json {
            let line = serde_json::to_string(&rec)
                .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
            // The document opens with its first record, so that an error found before any
            // record (an unknown group) is the only document printed.
            let sep = if self.printed == 0 {
                "{\"records\":["
            } else {
                ","
            };
            say!("{sep}{line}")?;
        } else {
            if self.printed == 0 {
                say!(
                    "{:>10} {:>13} {:>8} {:>6} {:>10} {:>8}  file / preview",
                    "offset",
                    "kind",
                    "group",
                    "term",
                    "index",
                    "bytes"
                )?;
            }
            say!(
                "{:>10} {:>13} {:>8} {:>6} {:>10} {:>8}  {} {}",
                rec.offset,
                rec.kind,
                rec.group,
                rec.term,
                rec.index,
                rec.payload_bytes,
                Path::new(file)
                    .file_name()
                    .map_or(String::new(), |f| f.to_string_lossy().into_owned()),
                rec.preview_text
            )?;
        }
        self.printed += 1;
        Ok(())
    }
}

pub fn run(args: DumpArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    let filter = Filter {
        group: args.group,
        from: args.from,
        to: args.to,
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to) {
        if f > t {
            return Err(CliError::Usage(format!("--from {f} is above --to {t}")));
        }
    }
    let _lock = target.lock_shared()?;
    let (planned, group_in_skipped) = match target.kind {
        Kind::Segment => (
            vec![Planned {
                path: target.path.clone(),
                id: target.id.unwrap_or(0),
                group_in_index: false,
            }],
            false,
        ),
        Kind::Index => {
            return Err(CliError::Usage(format!(
                "{}: `tern dump` takes a data directory or a segment; use `tern inspect-index` for an index",
                args.path.display()
            )))
        }
        Kind::DataDir | Kind::ShardDir => plan(&target, &filter)?,
    };
    let json = args.common.json;
    let is_dir = target.kind != Kind::Segment;
    let where_ = target.path.clone();
    let preview_bytes = args.preview_bytes;
    block_on(async move {
        let mut printer = Printer {
            json,
            preview_bytes,
            printed: 0,
            failed: None,
        };
        let mut group_seen = group_in_skipped;
        let mut damage = Vec::new();
        for seg in &planned {
            group_seen |= seg.group_in_index;
            let name = seg.path.display().to_string();
            // Damage is skipped only where the shard's torn-tail rule says it hit durable
            // data; that rule needs the batches of the segments before this one, and whether
            // this one is the last (as recovery and verify-data judge it).
            let dir = seg.path.parent().unwrap_or(Path::new("."));
            let place = segment_place(&DmaStorage, dir, seg.id).await?;
            let scan = scan_segment_placed(
                &DmaStorage,
                &seg.path,
                place.prev_last_seq,
                place.is_last,
                true,
                |r| {
                    let h = &r.header;
                    group_seen |=
                        filter.group == Some(h.group) && h.kind() != RecordKind::BatchHeader;
                    if filter.wants(h.kind(), h.group, h.index) {
                        printer.record(&name, r);
                    }
                },
            )
            .await?;
            if let Some(e) = printer.failed.take() {
                return Err(e);
            }
            let mut found: Vec<String> = scan
                .skipped
                .iter()
                .map(|d| format!("{name}: damage at offset {}: {}", d.record_offset, d.reason))
                .collect();
            // A damaged entry in an acknowledged batch is printed marked `damaged`; it is
            // damage (exit 1) unless a later Repair record supersedes it or it left the log,
            // judged with the whole shard by the rule recovery and verify-data use
            // (engine/src/repaired.rs).
            if !scan.damaged_entries.is_empty() {
                let shard = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("shard-"))
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0);
                let sa = analyze_shard(&DmaStorage, shard, dir, false, &mut |_| {}).await?;
                for (e, v) in damaged_entry_verdicts(&sa) {
                    if e.segment != seg.id {
                        continue;
                    }
                    let line = format!(
                        "{name}: damaged entry record at offset {} (group {} index {}): {}",
                        e.offset,
                        e.group,
                        e.index,
                        v.name()
                    );
                    if matches!(v, EntryDamage::Repaired | EntryDamage::Dead) {
                        if !json {
                            say!("-- {line}")?;
                        }
                    } else {
                        found.push(line);
                    }
                }
            }
            match &scan.stop {
                ScanStop::Damaged(d) => found.push(format!(
                    "{name}: damage at offset {}: {}",
                    d.record_offset, d.reason
                )),
                ScanStop::BadHeader(e) => {
                    found.push(format!("{name}: segment header unreadable: {e}"))
                }
                _ => {}
            }
            if !json {
                for d in &found {
                    say!("-- {d}")?;
                }
            }
            damage.extend(found);
        }
        if let Some(g) = filter
            .group
            .filter(|_| is_dir && !group_seen && damage.is_empty())
        {
            // Nothing of the group anywhere its records could be: a wrong id, not an empty
            // result. Nothing was printed, so the error is the only document.
            return Err(CliError::UnknownGroup {
                group: g,
                path: where_,
            });
        }
        if json {
            let damage = serde_json::to_string(&damage)
                .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
            let open = if printer.printed == 0 {
                "{\"records\":["
            } else {
                ""
            };
            say!("{open}],\"damage\":{damage}}}")?;
        } else if printer.printed == 0 {
            say!("no records match")?;
        }
        flush()?;
        Ok(if damage.is_empty() {
            EXIT_CLEAN
        } else {
            EXIT_PROBLEMS
        })
    })?
}
