//! `tern verify-data`.

use std::path::PathBuf;

use clap::Args;
use tern_engine::storage::dma::DmaStorage;
use tern_engine::verify::{read_layout, segment_bytes_total, verify_dir, VerifyOptions};

use super::{emit, human_bytes};
use crate::error::{CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::progress::Progress;
use crate::target::{block_on, resolve};
use crate::Common;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of a stopped node.
    #[arg(long)]
    pub path: PathBuf,
    /// Only report record-level problems (and list only this group).
    #[arg(long)]
    pub group: Option<u64>,
    /// Stop at the first problem (for scripts).
    #[arg(long)]
    pub fail_fast: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: VerifyArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    let root = target.require_root("verify-data")?.to_path_buf();
    let _lock = target.lock()?;
    let layout = read_layout(&root)?;
    let progress = Progress::new(segment_bytes_total(&layout), args.common.json, "verifying");
    let opts = VerifyOptions {
        group: args.group,
        fail_fast: args.fail_fast,
    };
    let report = block_on({
        let root = root.clone();
        async move {
            let p = progress;
            let r = verify_dir(&DmaStorage, &root, &opts, &mut |n| p.add(n)).await;
            p.finish();
            r
        }
    })??;
    emit(args.common.json, &report, || {
        let segments: usize = report.shards.iter().map(|s| s.segments).sum();
        let records: u64 = report.shards.iter().map(|s| s.records).sum();
        println!(
            "verify-data {}: {} shards, {segments} segments, {records} records",
            root.display(),
            report.shards.len()
        );
        for s in &report.shards {
            println!(
                "  shard {}: {} segments, {} batches, {} records, {}",
                s.shard,
                s.segments,
                s.batches,
                s.records,
                human_bytes(s.bytes)
            );
        }
        if !report.groups.is_empty() {
            println!(
                "  {:>8} {:>5} {:>10} {:>10} {:>10}  hard state (term/vote/commit)",
                "group", "shard", "first", "last", "entries"
            );
            for g in &report.groups {
                let hs = g.hard_state.map_or("-".to_string(), |h| {
                    format!("{}/{}/{}", h.term, h.vote, h.commit)
                });
                println!(
                    "  {:>8} {:>5} {:>10} {:>10} {:>10}  {hs}",
                    g.group, g.shard, g.first_index, g.last_index, g.entries
                );
            }
        }
        for w in &report.warnings {
            println!("{w}");
        }
        for p in &report.problems {
            println!("{p}");
        }
        if report.stopped_early {
            println!("stopped at the first problem (--fail-fast)");
        }
        if report.clean {
            println!("result: clean ({} warnings)", report.warnings.len());
        } else {
            println!("result: {} problems", report.problems.len());
        }
    })?;
    Ok(if report.clean {
        EXIT_CLEAN
    } else {
        EXIT_PROBLEMS
    })
}
