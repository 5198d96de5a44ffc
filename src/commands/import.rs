//! `tern import-topic`: a file written by `export-topic` into a data directory, through the
//! engine's own write path, all or nothing.
//!
//! The whole file is checked (every checksum, the trailer) before anything is written. The
//! group's records are then written under an import marker ([`crate::import_marker`]):
//! a failure the command sees (ENOSPC, an I/O error) rolls the group back and removes the
//! marker, so the directory holds no trace of the group; a failure it cannot see (`kill
//! -9`, power loss) leaves the marker, which `verify-data` reports as `import-incomplete`
//! and a re-run of the import replaces. The engine is opened with the directory's own
//! segment size (from its segment headers), never the default: a segment never grows past
//! the size its header states.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use tern::node::controller::offline::committed_state;
use tern::node::controller::CONTROLLER_GROUP;
use tern::node::log_store::stored_conf;
use tern::node::snapshot_meta::GroupSnapshot;
use tern_engine::constants::SEGMENT_HEADER_BYTES;
use tern_engine::engine::run_shards;
use tern_engine::export::{ExportMeta, ExportReader};
use tern_engine::format::segment::{parse_segment_file_name, SegmentHeader};
use tern_engine::storage::dma::DmaStorage;
use tern_engine::verify::{is_data_dir, read_layout};
use tern_engine::{shard_for_group, EngineConfig, Entry, HardState, ShardWal, WalConfig};
use tern_raft::message::ConfState;

use super::emit;
use super::topic::{print_summary, TopicSummary};
use crate::error::{CliError, CliResult, EXIT_CLEAN};
use crate::import_marker;
use crate::say;
use crate::target::create_absolute;
use crate::Common;

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
    /// Replace the group if it already has data (its old records are deleted first). An
    /// incomplete earlier import of the group is replaced without it.
    #[arg(long)]
    pub force: bool,
    /// Shard count of a data directory created by this import (default: one per CPU).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Segment size of a data directory created by this import (default 64 MiB). An
    /// existing directory keeps the size its segments were created with.
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

/// Entries appended per engine call: bounds the memory of one request.
const IMPORT_CHUNK_BYTES_MAX: usize = 256 << 10;
const IMPORT_CHUNK_ENTRIES_MAX: usize = 1024;

/// Reads the whole export once, checking every checksum and the trailer; returns its meta
/// and the sum of its payload sizes.
fn check_file(input: &Path) -> CliResult<(ExportMeta, u64)> {
    let file = File::open(input).map_err(|e| CliError::io(input, e))?;
    let export_err = |source| CliError::Export {
        path: input.to_path_buf(),
        source,
    };
    let mut r = ExportReader::open(BufReader::new(file)).map_err(export_err)?;
    let mut payload_bytes = 0u64;
    while let Some(e) = r.next_entry().map_err(export_err)? {
        payload_bytes += e.data.len() as u64;
    }
    Ok((r.meta.clone(), payload_bytes))
}

/// The segment size an existing data directory was created with: the size stated by the
/// newest readable segment header of each shard (they must agree). `None` if no shard has
/// a segment yet.
fn dir_segment_bytes(root: &Path) -> CliResult<Option<u64>> {
    use std::io::Read;
    let layout = read_layout(root)?;
    let mut found: Option<(u64, PathBuf)> = None;
    for dir in layout.shards.values() {
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| CliError::io(dir, e))?
            .flatten()
            .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            let path = dir.join(tern_engine::format::segment::segment_file_name(id));
            let mut block = vec![0u8; SEGMENT_HEADER_BYTES as usize];
            let read = File::open(&path).and_then(|mut f| f.read_exact(&mut block));
            let Ok(h) = read
                .map_err(|_| ())
                .and_then(|()| SegmentHeader::decode(&block).map_err(|_| ()))
            else {
                // A damaged header is verify-data's business; an older segment still tells.
                continue;
            };
            match &found {
                Some((size, other)) if *size != h.segment_bytes => {
                    return Err(CliError::Usage(format!(
                        "{} says segments of {} bytes, {} says {size}: run `tern verify-data --path {}`",
                        path.display(),
                        h.segment_bytes,
                        other.display(),
                        root.display()
                    )));
                }
                _ => found = Some((h.segment_bytes, path)),
            }
            break;
        }
    }
    Ok(found.map(|(size, _)| size))
}

/// The engine configuration of the import: the directory's segment size (or, for a new
/// directory, `--segment-bytes`), batches bounded to a quarter segment as the engine asks.
fn import_config(root: &Path, args: &ImportArgs, existing: bool) -> CliResult<EngineConfig> {
    let on_disk = if existing {
        dir_segment_bytes(root)?
    } else {
        None
    };
    let segment_bytes = match (on_disk, args.segment_bytes) {
        (Some(d), Some(asked)) if d != asked => {
            return Err(CliError::Usage(format!(
                "{} has {d}-byte segments; --segment-bytes {asked} only applies to a new data directory",
                root.display()
            )));
        }
        (Some(d), _) => d,
        (None, asked) => asked.unwrap_or(WalConfig::default().segment_bytes),
    };
    let defaults = WalConfig::default();
    let batch_bytes_max = defaults.batch_bytes_max.min(segment_bytes / 4);
    Ok(EngineConfig {
        shards: args.shards.unwrap_or(EngineConfig::default().shards),
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig {
            segment_bytes,
            batch_bytes_max,
            pending_bytes_max: 4 * batch_bytes_max,
            ..defaults
        },
    })
}

pub fn run(args: ImportArgs) -> CliResult<u8> {
    let (meta, payload_bytes) = check_file(&args.input)?;
    let file_bytes = std::fs::metadata(&args.input)
        .map_err(|e| CliError::io(&args.input, e))?
        .len();
    let root = args.path.clone();
    let mut existing = false;
    if root.exists() {
        let empty = root.is_dir()
            && std::fs::read_dir(&root)
                .map_err(|e| CliError::io(&root, e))?
                .next()
                .is_none();
        existing = !empty;
        if existing && !is_data_dir(&root) {
            // Explains why (no ENGINE file, not a directory).
            read_layout(&root)?;
        }
    }
    let root = create_absolute(&root)?;
    let cfg = import_config(&root, &args, existing)?;
    let membership = match (&meta.snapshot, existing) {
        (Some(_), true) => replaced_membership(&root, &cfg, args.group)?,
        _ => None,
    };
    let snapshot_meta = match &meta.snapshot {
        Some((_, _, m)) => Some(snapshot_with_membership(args.group, m, membership.as_ref())),
        None => None,
    };
    let group = args.group;
    let job = ImportJob {
        group,
        input: args.input.clone(),
        force: args.force,
        // Half a request, so a chunk plus the entry that crosses the mark stays within one.
        chunk_bytes_max: (cfg.wal.request_bytes_max() / 2) as usize,
        snapshot_meta,
    };
    // Set once the marker is durable: from then on a failure must roll the group back.
    let started = Arc::new(AtomicBool::new(false));
    let outcome = run_shards(&root, &cfg, true, {
        let started = started.clone();
        move |ctx| {
            let job = job.clone();
            let started = started.clone();
            async move {
                if shard_for_group(job.group, ctx.shards) != ctx.shard {
                    return Ok(None);
                }
                import_into(&ctx.wal, &ctx.root, &job, &started)
                    .await
                    .map(|()| Some(ctx.shard))
            }
        }
    })
    .map_err(CliError::from)
    .and_then(|per_shard| {
        let mut home = None;
        for r in per_shard {
            if let Some(k) = r? {
                home = Some(k);
            }
        }
        home.ok_or_else(|| CliError::Usage("no shard took the group".into()))
    });
    let shard = match outcome {
        Ok(shard) => shard,
        Err(cause) if started.load(Ordering::SeqCst) => {
            return Err(roll_back(&root, &cfg, group, cause));
        }
        Err(cause) => return Err(cause),
    };
    let mut s = TopicSummary::new(&args.input, &root, shard, &meta);
    s.group = group;
    s.file_bytes = file_bytes;
    s.payload_bytes = payload_bytes;
    emit(args.common.json, &s, || {
        if meta.group != group {
            say!("note: the file was exported from group {}", meta.group)?;
        }
        print_summary("imported", &s)
    })?;
    Ok(EXIT_CLEAN)
}

/// After a failed import: deletes what was written of the group and removes the marker. If
/// that fails too (the disk is still full, the process dies), the marker stays and says so.
fn roll_back(root: &Path, cfg: &EngineConfig, group: u64, cause: CliError) -> CliError {
    let deleted = run_shards(root, cfg, false, move |ctx| async move {
        if shard_for_group(group, ctx.shards) != ctx.shard {
            return Ok(());
        }
        ctx.wal.delete_group(group).await
    });
    let rolled_back = match deleted {
        Ok(per_shard) => per_shard
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map_err(CliError::from)
            .and_then(|_| import_marker::remove(root, group)),
        Err(e) => Err(CliError::from(e)),
    };
    let outcome = match rolled_back {
        Ok(()) => "rolled back: the directory holds nothing of the group".to_string(),
        Err(e) => {
            let why = if e.to_string() == cause.to_string() {
                "for the same reason".to_string()
            } else {
                format!("({e})")
            };
            format!(
                "rolling back failed too {why}: {} marks the group as an incomplete import; \
                 re-run the import to replace it once the cause is fixed",
                import_marker::marker_path(root, group).display()
            )
        }
    };
    CliError::ImportFailed {
        group,
        cause: Box::new(cause),
        outcome,
    }
}

/// What one import writes, decided before the engine runs.
#[derive(Debug, Clone)]
struct ImportJob {
    group: u64,
    input: PathBuf,
    force: bool,
    /// Payload bytes appended per engine call at most.
    chunk_bytes_max: usize,
    /// The snapshot metadata to install when the file has a snapshot point: the file's, with
    /// the membership of the group it replaces ([`snapshot_with_membership`]).
    snapshot_meta: Option<Vec<u8>>,
}

async fn import_into(
    wal: &ShardWal<DmaStorage>,
    root: &Path,
    job: &ImportJob,
    started: &AtomicBool,
) -> CliResult<()> {
    let (group, input, force, chunk_bytes_max) = (
        job.group,
        job.input.as_path(),
        job.force,
        job.chunk_bytes_max,
    );
    let incomplete = import_marker::marker_path(root, group).exists();
    let has_data = wal.group(group).is_some_and(|info| {
        info.last_index >= info.first_index || info.hard_state.is_some() || info.snapshot.is_some()
    });
    if has_data && !force && !incomplete {
        let (first, last) = wal
            .group(group)
            .map_or((0, 0), |i| (i.first_index, i.last_index));
        return Err(CliError::Usage(format!(
            "group {group} already has data (entries {first}..={last}); use --force to replace it"
        )));
    }
    import_marker::create(root, group, input)?;
    started.store(true, Ordering::SeqCst);
    if has_data {
        wal.delete_group(group).await?;
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
        let m = job.snapshot_meta.as_deref().unwrap_or(m);
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
            || chunk_bytes >= IMPORT_CHUNK_BYTES_MAX.min(chunk_bytes_max)
            || chunk.len() >= IMPORT_CHUNK_ENTRIES_MAX;
        if flush && !chunk.is_empty() {
            let entries: Vec<Entry<'_>> = chunk
                .iter()
                .map(|(term, index, data)| Entry {
                    term: *term,
                    index: *index,
                    // The export format does not carry the entry kind (docs/export-format.md).
                    kind: tern_engine::EntryKind::Normal,
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
                // Each record costs its header too.
                chunk_bytes += e.data.len() + tern_engine::constants::RECORD_HEADER_BYTES;
                let data = old_configuration_dropped(group, e.index, e.data);
                chunk.push((e.term, e.index, data));
            }
        }
    }
    for durable in pending {
        durable.await?;
    }
    if let Some((term, vote, commit)) = meta.hard_state {
        wal.set_hard_state(group, HardState { term, vote, commit })
            .await?;
    }
    // Every record above is durable (each call resolved after its fsync): the group is
    // complete.
    import_marker::remove(root, group)
}

/// The membership of the group an import replaces, for the restored snapshot point (whose
/// configuration is the exported cluster's: kept, a standalone node restored from the
/// backup of a 3-node cluster could never elect itself for the partition). In order: the
/// configuration the replaced group stores (its newest configuration entry or snapshot
/// point), else the replicas the directory's controller created the partition with (the
/// configuration such a group starts with), else none (the file's is kept). Read in a pass
/// of its own, before the import, because the controller may live on another shard.
fn replaced_membership(
    root: &Path,
    cfg: &EngineConfig,
    group: u64,
) -> CliResult<Option<(ConfState, &'static str)>> {
    let per_shard = run_shards(root, cfg, false, move |ctx| async move {
        let own = if shard_for_group(group, ctx.shards) == ctx.shard {
            stored_conf(&ctx.wal, group).await?
        } else {
            None
        };
        let placed = if shard_for_group(CONTROLLER_GROUP, ctx.shards) == ctx.shard {
            committed_state(&ctx.wal).await?.and_then(|state| {
                state
                    .topics()
                    .values()
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.group == group)
                    .map(|p| ConfState::with_voters(&p.initial))
            })
        } else {
            None
        };
        Ok::<_, String>((own, placed))
    })?;
    let (mut own, mut placed) = (None, None);
    for r in per_shard {
        let (o, p) = r.map_err(|why| {
            CliError::Usage(format!(
                "reading the membership of group {group} in {}: {why}",
                root.display()
            ))
        })?;
        own = own.or(o);
        placed = placed.or(p);
    }
    Ok(own
        .map(|c| (c, "the configuration the replaced group stores"))
        .or(placed.map(|c| {
            (
                c,
                "the replicas the directory's controller placed the partition on",
            )
        })))
}

/// The snapshot metadata to install: the file's, with `membership` as its configuration when
/// there is one and the metadata is a node's (`GroupSnapshot`; a directory written by other
/// tools, e.g. `tern generate`, holds opaque metadata, kept as it is). Said on stderr.
fn snapshot_with_membership(
    group: u64,
    meta: &[u8],
    membership: Option<&(ConfState, &'static str)>,
) -> Vec<u8> {
    let mut snap = match GroupSnapshot::decode(meta) {
        Ok(snap) => snap,
        Err(why) => {
            if membership.is_some() {
                tracing::warn!(
                    group,
                    "import: the snapshot metadata is not a tern node's ({why}); kept as it is"
                );
            }
            return meta.to_vec();
        }
    };
    let Some((conf, source)) = membership else {
        tracing::warn!(
            group,
            voters = ?snap.conf.voters,
            "import: the snapshot point keeps the exported cluster's voters (the directory has no group {group} to take the membership of); create the topic first and import with --force (docs/operations/cluster.md, section 8)"
        );
        return meta.to_vec();
    };
    // A warning, as for the configuration entries below: the group no longer holds the
    // file's configuration, and the operator should know (the CLI shows warnings).
    tracing::warn!(
        group,
        exported_voters = ?snap.conf.voters,
        voters = ?conf.voters,
        learners = ?conf.learners,
        "import: the restored snapshot point takes the membership of the group it replaces ({source})"
    );
    snap.conf = conf.clone();
    snap.encode()
}

/// The export format does not carry the entry kind, so a Raft configuration change of the
/// exported cluster (written when members were added or removed) would come back as a
/// normal entry that is no record batch, and the group would refuse to start. Such an entry
/// (no record batches, but a configuration's encoding) is imported as an empty entry, which
/// holds no records and no configuration: the restored group takes its members from the
/// cluster it is imported into. Said on stderr, naming the voters it named.
fn old_configuration_dropped(group: u64, index: u64, data: Vec<u8>) -> Vec<u8> {
    if data.is_empty() || tern::node::records::parse_batches(&data).is_ok() {
        return data;
    }
    match tern_raft::message::ConfState::decode(&data) {
        Some(conf) => {
            tracing::warn!(
                group,
                index,
                voters = ?conf.voters,
                learners = ?conf.learners,
                "import: entry {index} is a configuration change of the exported cluster; imported as an empty entry (the restored group takes its members from this cluster)"
            );
            Vec::new()
        }
        None => data,
    }
}
