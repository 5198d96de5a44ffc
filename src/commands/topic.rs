//! `tern export-topic` (and the summary import-topic prints too). Until topics exist, a topic is one Raft
//! group named by its id. The file format is `docs/export-format.md`
//! ([`tern_engine::export`]).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use tern_engine::engine::shard_dir;
use tern_engine::export::{ExportMeta, ExportWriter};
use tern_engine::format::segment::segment_file_name;
use tern_engine::format::{decode_entry_at, record_bytes};
use tern_engine::shard_for_group;
use tern_engine::storage::dma::DmaStorage;
use tern_engine::storage::{Storage, StorageFile};
use tern_engine::verify::{analyze_shard, check_shard, read_layout, Severity, VerifyOptions};

use super::emit;
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::import_marker;
use crate::progress::Progress;
use crate::say;
use crate::target::{block_on, resolve, Kind};
use crate::Common;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Data directory of a stopped node.
    #[arg(long)]
    pub path: PathBuf,
    /// The topic's group id.
    #[arg(long)]
    pub group: u64,
    /// File to write (replaced atomically: temp file + fsync + rename).
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

/// Hard state in JSON: an object, as `verify-data` prints it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct HardStateOut {
    term: u64,
    vote: u64,
    commit: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct SnapshotOut {
    term: u64,
    index: u64,
}

/// What export-topic and import-topic print: the same fields with the same meaning.
#[derive(Debug, Serialize)]
pub(super) struct TopicSummary {
    /// The export file.
    file: PathBuf,
    data_dir: PathBuf,
    pub(super) group: u64,
    shard: u32,
    entries: u64,
    first_index: u64,
    last_index: u64,
    term_first: u64,
    term_last: u64,
    hard_state: Option<HardStateOut>,
    snapshot: Option<SnapshotOut>,
    /// Size of the export file.
    pub(super) file_bytes: u64,
    /// Sum of the entries' payload sizes.
    pub(super) payload_bytes: u64,
}

impl TopicSummary {
    pub(super) fn new(file: &Path, data_dir: &Path, shard: u32, meta: &ExportMeta) -> Self {
        TopicSummary {
            file: file.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            group: meta.group,
            shard,
            entries: meta.entry_count(),
            first_index: meta.first_index,
            last_index: meta.last_index,
            term_first: meta.term_first,
            term_last: meta.term_last,
            hard_state: meta.hard_state.map(|(term, vote, commit)| HardStateOut {
                term,
                vote,
                commit,
            }),
            snapshot: meta.snapshot.as_ref().map(|(term, index, _)| SnapshotOut {
                term: *term,
                index: *index,
            }),
            file_bytes: 0,
            payload_bytes: 0,
        }
    }
}

pub(super) fn print_summary(verb: &str, s: &TopicSummary) -> CliResult<()> {
    say!(
        "{verb} group {} (shard {}): {} entries, index {}..={}, term {}..={}",
        s.group,
        s.shard,
        s.entries,
        s.first_index,
        s.last_index,
        s.term_first,
        s.term_last
    )?;
    if let Some(h) = s.hard_state {
        say!(
            "  hard state: term {} vote {} commit {}",
            h.term,
            h.vote,
            h.commit
        )?;
    }
    if let Some(sn) = s.snapshot {
        say!("  snapshot: term {} index {}", sn.term, sn.index)?;
    }
    say!(
        "  file {} ({} bytes, {} of payload), data directory {}",
        s.file.display(),
        s.file_bytes,
        s.payload_bytes,
        s.data_dir.display()
    )
}

pub fn export(args: ExportArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    if target.kind != Kind::DataDir {
        return Err(CliError::Usage(format!(
            "{}: `tern export-topic` takes a data directory",
            args.path.display()
        )));
    }
    let root = target.path.clone();
    let _lock = target.lock_shared()?;
    let layout = read_layout(&root)?;
    if import_marker::marker_path(&root, args.group).exists() {
        return Err(CliError::Usage(format!(
            "group {} in {} is an incomplete import: re-run `tern import-topic` to finish it first",
            args.group,
            root.display()
        )));
    }
    let meta = layout.meta.clone().map_err(|why| {
        CliError::Usage(format!("{}: ENGINE file unusable: {why}", root.display()))
    })?;
    let group = args.group;
    let shard = shard_for_group(group, meta.shards);
    let dir = shard_dir(&root, shard);
    let output = args.output.clone();
    let json = args.common.json;
    let result = block_on({
        let dir = dir.clone();
        let output = output.clone();
        async move { export_group(&dir, shard, group, &output, json).await }
    })??;
    match result {
        Err(problems) => {
            #[derive(Serialize)]
            struct Refused<'a> {
                refused: &'a str,
                problems: &'a [String],
            }
            let why = "the group's data is damaged: run `tern verify-data` and `tern repair` first";
            emit(
                json,
                &Refused {
                    refused: why,
                    problems: &problems,
                },
                || {
                    say!("export-topic refused: {why}")?;
                    for p in &problems {
                        say!("  {p}")?;
                    }
                    Ok(())
                },
            )?;
            Ok(EXIT_PROBLEMS)
        }
        Ok(mut s) => {
            s.data_dir = root;
            emit(json, &s, || print_summary("exported", &s))?;
            Ok(EXIT_CLEAN)
        }
    }
}

/// Reads the group through the scanner and the group table (as recovery would build it),
/// verifying each record again as it is read, and writes the export.
async fn export_group(
    dir: &Path,
    shard: u32,
    group: u64,
    output: &Path,
    json: bool,
) -> CliResult<Result<TopicSummary, Vec<String>>> {
    let sa = analyze_shard(&DmaStorage, shard, dir, false, &mut |_| {}).await?;
    let opts = VerifyOptions {
        group: Some(group),
        fail_fast: false,
        strict: false,
    };
    let (problems, table) = check_shard(&DmaStorage, &sa, &opts).await?;
    // A torn tail was never acknowledged: the engine drops it too, so it does not stop an
    // export. Index problems do not touch the data.
    let blocking: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .filter(|p| {
            !matches!(
                p.code,
                "torn-tail"
                    | "index-missing"
                    | "index-corrupt"
                    | "index-mismatch"
                    | "segment-oversize"
            )
        })
        .map(|p| p.to_string())
        .collect();
    if !blocking.is_empty() {
        return Ok(Err(blocking));
    }
    let Some(st) = table.group(group) else {
        return Err(CliError::Usage(format!(
            "group {group} has no data in {}",
            dir.display()
        )));
    };
    let meta = ExportMeta {
        group,
        first_index: st.first_index(),
        last_index: st.last_index(),
        term_first: st.entries().front().map_or(0, |e| e.term),
        term_last: st.entries().back().map_or(0, |e| e.term),
        hard_state: st.hard_state().map(|h| (h.term, h.vote, h.commit)),
        snapshot: st.snapshot().map(|s| (s.term, s.index, s.meta.clone())),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let total: u64 = st.entries().iter().map(|e| e.payload_len as u64).sum();
    let progress = Progress::new(total, json, "exporting");
    let tmp = output.with_extension("tmp-export");
    let file = File::create(&tmp).map_err(|e| CliError::io(&tmp, e))?;
    let export_err = |source| CliError::Export {
        path: tmp.clone(),
        source,
    };
    let mut w = ExportWriter::new(BufWriter::new(file), meta.clone()).map_err(export_err)?;
    let mut open: Option<(u64, <DmaStorage as Storage>::File)> = None;
    for (i, loc) in st.entries().iter().enumerate() {
        let index = st.first_index() + i as u64;
        if open.as_ref().is_none_or(|(id, _)| *id != loc.segment) {
            if let Some((_, f)) = open.take() {
                f.close().await.map_err(|e| CliError::io(dir, e))?;
            }
            let p = dir.join(segment_file_name(loc.segment));
            let f = DmaStorage
                .open(&p, false)
                .await
                .map_err(|e| CliError::io(&p, e))?;
            open = Some((loc.segment, f));
        }
        let Some((_, f)) = open.as_ref() else {
            continue;
        };
        let seg = dir.join(segment_file_name(loc.segment));
        let bytes = f
            .read_at(loc.offset, record_bytes(loc.payload_len))
            .await
            .map_err(|e| CliError::io(&seg, e))?;
        let corrupt = |what: String| {
            CliError::Engine(tern_engine::Error::Corruption {
                at: tern_engine::error::Location {
                    file: seg.clone(),
                    offset: loc.offset,
                    group: Some(group),
                    index: Some(index),
                },
                what,
            })
        };
        let payload = decode_entry_at(&bytes, group, index, loc.term).map_err(corrupt)?;
        w.write_entry(loc.term, index, payload)
            .map_err(export_err)?;
        progress.add(payload.len() as u64);
    }
    if let Some((_, f)) = open.take() {
        f.close().await.map_err(|e| CliError::io(dir, e))?;
    }
    let out = w.finish().map_err(export_err)?;
    let file = out
        .into_inner()
        .map_err(|e| CliError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| CliError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, output).map_err(|e| CliError::io(output, e))?;
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::io(parent, e))?;
    progress.finish();
    let bytes = std::fs::metadata(output)
        .map_err(|e| CliError::io(output, e))?
        .len();
    let mut summary = TopicSummary::new(output, Path::new(""), shard, &meta);
    summary.file_bytes = bytes;
    summary.payload_bytes = total;
    Ok(Ok(summary))
}
