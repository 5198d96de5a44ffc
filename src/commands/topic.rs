//! `tern export-topic` and `tern import-topic`. Until topics exist, a topic is one Raft
//! group named by its id. The file format is `docs/export-format.md`
//! ([`tern_engine::export`]).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use tern_engine::engine::{run_shards, shard_dir};
use tern_engine::export::{ExportMeta, ExportReader, ExportWriter};
use tern_engine::format::segment::segment_file_name;
use tern_engine::format::{decode_entry_at, record_bytes};
use tern_engine::storage::dma::DmaStorage;
use tern_engine::storage::{Storage, StorageFile};
use tern_engine::verify::{
    analyze_shard, check_shard, is_data_dir, read_layout, Severity, VerifyOptions,
};
use tern_engine::{shard_for_group, EngineConfig, Entry, HardState, WalConfig};

use super::emit;
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::progress::Progress;
use crate::target::{block_on, create_absolute, resolve, Kind};
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

#[derive(Debug, Serialize)]
struct TopicSummary {
    file: PathBuf,
    data_dir: PathBuf,
    group: u64,
    shard: u32,
    entries: u64,
    first_index: u64,
    last_index: u64,
    term_first: u64,
    term_last: u64,
    hard_state: Option<(u64, u64, u64)>,
    snapshot: Option<(u64, u64)>,
    bytes: u64,
}

fn print_summary(verb: &str, s: &TopicSummary) {
    println!(
        "{verb} group {} (shard {}): {} entries, index {}..={}, term {}..={}",
        s.group, s.shard, s.entries, s.first_index, s.last_index, s.term_first, s.term_last
    );
    if let Some((t, v, c)) = s.hard_state {
        println!("  hard state: term {t} vote {v} commit {c}");
    }
    if let Some((t, i)) = s.snapshot {
        println!("  snapshot: term {t} index {i}");
    }
    println!(
        "  file {} ({} bytes), data directory {}",
        s.file.display(),
        s.bytes,
        s.data_dir.display()
    );
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
    let _lock = target.lock()?;
    let layout = read_layout(&root)?;
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
                    println!("export-topic refused: {why}");
                    for p in &problems {
                        println!("  {p}");
                    }
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
                "torn-tail" | "index-missing" | "index-corrupt" | "index-mismatch"
            )
        })
        .map(|p| p.to_string())
        .collect();
    if !blocking.is_empty() {
        return Ok(Err(blocking));
    }
    let Some(st) = table.groups.get(&group) else {
        return Err(CliError::Usage(format!(
            "group {group} has no data in {}",
            dir.display()
        )));
    };
    let meta = ExportMeta {
        group,
        first_index: st.first_index,
        last_index: st.last_index(),
        term_first: st.entries.front().map_or(0, |e| e.term),
        term_last: st.entries.back().map_or(0, |e| e.term),
        hard_state: st.hard_state.map(|h| (h.term, h.vote, h.commit)),
        snapshot: st
            .snapshot
            .as_ref()
            .map(|s| (s.term, s.index, s.meta.clone())),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let total: u64 = st.entries.iter().map(|e| e.payload_len as u64).sum();
    let progress = Progress::new(total, json, "exporting");
    let tmp = output.with_extension("tmp-export");
    let file = File::create(&tmp).map_err(|e| CliError::io(&tmp, e))?;
    let export_err = |source| CliError::Export {
        path: tmp.clone(),
        source,
    };
    let mut w = ExportWriter::new(BufWriter::new(file), meta.clone()).map_err(export_err)?;
    let mut open: Option<(u64, <DmaStorage as Storage>::File)> = None;
    for (i, loc) in st.entries.iter().enumerate() {
        let index = st.first_index + i as u64;
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
    Ok(Ok(TopicSummary {
        file: output.to_path_buf(),
        data_dir: PathBuf::new(),
        group,
        shard,
        entries: meta.entry_count(),
        first_index: meta.first_index,
        last_index: meta.last_index,
        term_first: meta.term_first,
        term_last: meta.term_last,
        hard_state: meta.hard_state,
        snapshot: meta.snapshot.map(|(t, i, _)| (t, i)),
        bytes,
    }))
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Data directory of a stopped node; created if missing or empty.
    #[arg(long)]
    pub path: PathBuf,
    /// Group id to import into (may differ from the group the file was exported from).
    #[arg(long)]
    pub group: u64,
    /// File written by `tern export-topic`.
    #[arg(long)]
    pub input: PathBuf,
    /// Replace the group if it already has data (its old records are deleted first).
    #[arg(long)]
    pub force: bool,
    /// Shard count of a data directory created by this import (default: one per CPU).
    #[arg(long)]
    pub shards: Option<u32>,
    #[command(flatten)]
    pub common: Common,
}

/// Entries appended per engine call: bounds the memory of one request.
const IMPORT_CHUNK_BYTES_MAX: usize = 256 << 10;
const IMPORT_CHUNK_ENTRIES_MAX: usize = 1024;

pub fn import(args: ImportArgs) -> CliResult<u8> {
    // Check the whole file (every checksum, the trailer) before writing anything.
    let file = File::open(&args.input).map_err(|e| CliError::io(&args.input, e))?;
    let export_err = |source| CliError::Export {
        path: args.input.clone(),
        source,
    };
    let mut r = ExportReader::open(BufReader::new(file)).map_err(export_err)?;
    let mut bytes = 0u64;
    while let Some(e) = r.next_entry().map_err(export_err)? {
        bytes += e.data.len() as u64;
    }
    let meta = r.meta.clone();

    let root = args.path.clone();
    if root.exists() {
        let empty = root.is_dir()
            && std::fs::read_dir(&root)
                .map_err(|e| CliError::io(&root, e))?
                .next()
                .is_none();
        if !empty && !is_data_dir(&root) {
            read_layout(&root)?;
        }
    }
    let root = create_absolute(&root)?;
    let cfg = EngineConfig {
        shards: args.shards.unwrap_or(EngineConfig::default().shards),
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig::default(),
    };
    let group = args.group;
    let force = args.force;
    let input = args.input.clone();
    let results = run_shards(&root, &cfg, true, move |ctx| {
        let input = input.clone();
        async move {
            if shard_for_group(group, ctx.shards) != ctx.shard {
                return Ok(None);
            }
            import_into(&ctx.wal, group, &input, force)
                .await
                .map(|s| Some((ctx.shard, s)))
        }
    })?;
    let mut shard = 0;
    for r in results {
        match r {
            Ok(Some((s, ()))) => shard = s,
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    let s = TopicSummary {
        file: args.input.clone(),
        data_dir: root,
        group,
        shard,
        entries: meta.entry_count(),
        first_index: meta.first_index,
        last_index: meta.last_index,
        term_first: meta.term_first,
        term_last: meta.term_last,
        hard_state: meta.hard_state,
        snapshot: meta.snapshot.map(|(t, i, _)| (t, i)),
        bytes,
    };
    emit(args.common.json, &s, || {
        if meta.group != group {
            println!("note: the file was exported from group {}", meta.group);
        }
        print_summary("imported", &s)
    })?;
    Ok(EXIT_CLEAN)
}

async fn import_into(
    wal: &tern_engine::ShardWal<DmaStorage>,
    group: u64,
    input: &Path,
    force: bool,
) -> CliResult<()> {
    if let Some(info) = wal.group(group) {
        let has_data = info.last_index >= info.first_index
            || info.hard_state.is_some()
            || info.snapshot.is_some();
        if has_data && !force {
            return Err(CliError::Usage(format!(
                "group {group} already has data (entries {}..={}); use --force to replace it",
                info.first_index, info.last_index
            )));
        }
        if has_data {
            wal.delete_group(group).await?;
        }
    }
    let file = File::open(input).map_err(|e| CliError::io(input, e))?;
    let export_err = |source| CliError::Export {
        path: input.to_path_buf(),
        source,
    };
    let mut r = ExportReader::open(BufReader::new(file)).map_err(export_err)?;
    let meta = r.meta.clone();
    let mut first = 1;
    if let Some((term, index, m)) = &meta.snapshot {
        wal.install_snapshot(group, *term, *index, m).await?;
        first = index + 1;
    }
    if meta.first_index > first {
        wal.compact(group, meta.first_index).await?;
    }
    let mut pending = Vec::new();
    let mut chunk: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let mut chunk_bytes = 0;
    loop {
        let next = r.next_entry().map_err(export_err)?;
        let flush = next.is_none()
            || chunk_bytes >= IMPORT_CHUNK_BYTES_MAX
            || chunk.len() >= IMPORT_CHUNK_ENTRIES_MAX;
        if flush && !chunk.is_empty() {
            let entries: Vec<Entry<'_>> = chunk
                .iter()
                .map(|(term, index, data)| Entry {
                    term: *term,
                    index: *index,
                    data,
                })
                .collect();
            pending.push(wal.enqueue_append(group, &entries).await?);
            chunk.clear();
            chunk_bytes = 0;
        }
        match next {
            None => break,
            Some(e) => {
                chunk_bytes += e.data.len();
                chunk.push((e.term, e.index, e.data));
            }
        }
    }
    for rx in pending {
        rx.await
            .map_err(|_| CliError::Usage("the shard stopped during the import".into()))??;
    }
    if let Some((term, vote, commit)) = meta.hard_state {
        wal.set_hard_state(group, HardState { term, vote, commit })
            .await?;
    }
    Ok(())
}
