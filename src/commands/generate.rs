//! `tern generate`: a realistic data directory written by the real engine, to practise the
//! runbooks on (and for the tests).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use tern_engine::engine::run_shards;
use tern_engine::{shard_for_group, EngineConfig, Entry, HardState, WalConfig};

use super::emit;
use crate::error::{CliError, CliResult, EXIT_CLEAN};
use crate::say;
use crate::target::create_absolute;
use crate::Common;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory to create (must be missing or empty).
    #[arg(long)]
    pub path: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Groups 1..=N (one topic each).
    #[arg(long, default_value_t = 4)]
    pub groups: u64,
    /// Entries per group (indexes 1..=M; the term rises twice along the way).
    #[arg(long, default_value_t = 1000)]
    pub entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 512)]
    pub record_bytes: usize,
    /// Segment size; small, so the directory has several sealed segments and indexes.
    #[arg(long, default_value_t = 1 << 20)]
    pub segment_bytes: u64,
    #[command(flatten)]
    pub common: Common,
}

/// Entries per append call.
const CHUNK_ENTRIES: u64 = 8;
/// A hard state (commit = last durable index) is written every this many entries.
const HARD_STATE_EVERY: u64 = 256;

/// Deterministic payload of (group, index, term): readable prefix, then a filler pattern.
pub fn payload(group: u64, index: u64, term: u64, len: usize) -> Vec<u8> {
    let mut out = format!("g{group}-i{index}-t{term}:").into_bytes();
    let mut x = group.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ term;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(len);
    out
}

fn term_of(index: u64, entries: u64) -> u64 {
    1 + (index - 1) * 3 / entries.max(1)
}

#[derive(Serialize)]
struct Generated {
    path: PathBuf,
    shards: u32,
    groups: u64,
    entries_per_group: u64,
    record_bytes: usize,
    segment_bytes: u64,
}

pub fn run(args: GenerateArgs) -> CliResult<u8> {
    if args.path.exists() {
        let empty = args.path.is_dir()
            && std::fs::read_dir(&args.path)
                .map_err(|e| CliError::io(&args.path, e))?
                .next()
                .is_none();
        if !empty {
            return Err(CliError::Usage(format!(
                "{} exists and is not empty: `tern generate` only writes a fresh directory",
                args.path.display()
            )));
        }
    }
    if args.entries == 0 || args.groups == 0 {
        return Err(CliError::Usage(
            "--groups and --entries must be at least 1".into(),
        ));
    }
    let cfg = EngineConfig {
        shards: args.shards,
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig {
            segment_bytes: args.segment_bytes,
            batch_bytes_max: (64 << 10).min(args.segment_bytes / 4),
            pending_bytes_max: 256 << 10,
            ..WalConfig::default()
        },
    };
    let (groups, entries, len) = (args.groups, args.entries, args.record_bytes);
    let root = create_absolute(&args.path)?;
    let results = run_shards(&root, &cfg, true, move |ctx| async move {
        let mine: Vec<u64> = (1..=groups)
            .filter(|g| shard_for_group(*g, ctx.shards) == ctx.shard)
            .collect();
        let mut pending: Vec<tern_engine::Durable> = Vec::new();
        let mut next = 1;
        let mut term = 0;
        while next <= entries {
            let last = (next + CHUNK_ENTRIES - 1).min(entries);
            if term_of(next, entries) != term {
                // A new term is made durable before entries of that term are appended.
                term = term_of(next, entries);
                for rx in pending.drain(..) {
                    rx.await?;
                }
                for &g in &mine {
                    let hs = HardState {
                        term,
                        vote: 1,
                        commit: next - 1,
                    };
                    ctx.wal.set_hard_state(g, hs).await?;
                }
            }
            let last = last.min(if term_of(last, entries) != term {
                (next..=last)
                    .take_while(|i| term_of(*i, entries) == term)
                    .last()
                    .unwrap_or(next)
            } else {
                last
            });
            for &g in &mine {
                let data: Vec<(u64, Vec<u8>)> = (next..=last)
                    .map(|i| (i, payload(g, i, term_of(i, entries), len)))
                    .collect();
                let batch: Vec<Entry<'_>> = data
                    .iter()
                    .map(|(i, d)| Entry {
                        kind: tern_engine::EntryKind::Normal,
                        term: term_of(*i, entries),
                        index: *i,
                        data: d,
                    })
                    .collect();
                pending.push(ctx.wal.enqueue_append(g, &batch).await?);
            }
            let crossed =
                last / HARD_STATE_EVERY != (next - 1) / HARD_STATE_EVERY || last == entries;
            if crossed {
                // Commit only what is durable, as Raft would.
                for rx in pending.drain(..) {
                    rx.await?;
                }
                for &g in &mine {
                    let hs = HardState {
                        term: term_of(last, entries),
                        vote: 1,
                        commit: last,
                    };
                    ctx.wal.set_hard_state(g, hs).await?;
                }
            }
            next = last + 1;
        }
        Ok::<(), tern_engine::Error>(())
    })?;
    for r in results {
        r?;
    }
    let out = Generated {
        path: args.path.clone(),
        shards: args.shards,
        groups,
        entries_per_group: entries,
        record_bytes: len,
        segment_bytes: args.segment_bytes,
    };
    emit(args.common.json, &out, || {
        say!(
            "generated {}: {} shards, groups 1..={groups}, {entries} entries of {len} bytes each, {}-byte segments",
            out.path.display(),
            out.shards,
            out.segment_bytes
        )?;
        Ok(())
    })?;
    Ok(EXIT_CLEAN)
}
