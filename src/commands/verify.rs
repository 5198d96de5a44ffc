//! `tern verify-data`.

use std::path::{Path, PathBuf};

use clap::Args;
use tern_engine::storage::dma::DmaStorage;
use tern_engine::verify::{
    read_layout, segment_bytes_total, verify_dir, Problem, Severity, VerifyOptions, VerifyReport,
};

use super::{emit, human_bytes};
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_PROBLEMS};
use crate::import_marker;
use crate::output::plural;
use crate::progress::Progress;
use crate::say;
use crate::target::{block_on, resolve};
use crate::Common;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of a stopped node.
    #[arg(long)]
    pub path: PathBuf,
    /// Only report record-level problems (and list only this group). A group the directory
    /// holds nothing of is an error (exit code 2), not a clean result.
    #[arg(long)]
    pub group: Option<u64>,
    /// Stop at the first problem (for scripts).
    #[arg(long)]
    pub fail_fast: bool,
    /// Also count as problems what recovery repairs by itself (a missing index of a sealed
    /// segment that scans clean, a warning otherwise).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: VerifyArgs) -> CliResult<u8> {
    let target = resolve(&args.path)?;
    let root = target.require_root("verify-data")?.to_path_buf();
    let _lock = target.lock_shared()?;
    let layout = read_layout(&root)?;
    let progress = Progress::new(segment_bytes_total(&layout), args.common.json, "verifying");
    let opts = VerifyOptions {
        group: args.group,
        fail_fast: args.fail_fast,
        strict: args.strict,
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
    let mut report = report;
    note_incomplete_imports(&root, &mut report, args.group)?;
    if let Some(g) = args.group {
        let known = report.groups.iter().any(|s| s.group == g)
            || report
                .problems
                .iter()
                .chain(&report.warnings)
                .any(|p| p.group == Some(g));
        if !known && !report.stopped_early {
            return Err(CliError::UnknownGroup {
                group: g,
                path: root,
            });
        }
    }
    emit(args.common.json, &report, || {
        let segments: usize = report.shards.iter().map(|s| s.segments).sum();
        let records: u64 = report.shards.iter().map(|s| s.records).sum();
        say!(
            "verify-data {}: {} shards, {segments} segments, {records} records",
            root.display(),
            report.shards.len()
        )?;
        for s in &report.shards {
            say!(
                "  shard {}: {} segments, {} batches, {} records, {}",
                s.shard,
                s.segments,
                s.batches,
                s.records,
                human_bytes(s.bytes)
            )?;
        }
        if !report.groups.is_empty() {
            say!(
                "  {:>8} {:>5} {:>10} {:>10} {:>10}  hard state (term/vote/commit)",
                "group",
                "shard",
                "first",
                "last",
                "entries"
            )?;
            for g in &report.groups {
                let hs = g.hard_state.map_or("-".to_string(), |h| {
                    format!("{}/{}/{}", h.term, h.vote, h.commit)
                });
                say!(
                    "  {:>8} {:>5} {:>10} {:>10} {:>10}  {hs}",
                    g.group,
                    g.shard,
                    g.first_index,
                    g.last_index,
                    g.entries
                )?;
            }
        }
        for w in &report.warnings {
            say!("{w}")?;
        }
        for p in &report.problems {
            say!("{p}")?;
        }
        if report.stopped_early {
            say!("stopped at the first problem (--fail-fast)")?;
        }
        let warnings = plural(report.warnings.len(), "warning", "warnings");
        if report.clean {
            say!("result: clean ({warnings})")?;
        } else {
            let problems = plural(report.problems.len(), "problem", "problems");
            say!("result: {problems} ({warnings})")?;
        }
        Ok(())
    })?;
    Ok(if report.clean {
        EXIT_CLEAN
    } else {
        EXIT_PROBLEMS
    })
}

/// An import marker ([`crate::import_marker`]) means the group holds part of an import: a
/// problem (it looks like a normal group otherwise), no longer a stray file.
fn note_incomplete_imports(
    root: &Path,
    report: &mut VerifyReport,
    only: Option<u64>,
) -> CliResult<()> {
    for (group, path) in import_marker::markers(root)? {
        report.warnings.retain(|w| w.file != path);
        if only.is_some_and(|g| g != group) {
            continue;
        }
        let input = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("input=").map(str::to_string))
            })
            .unwrap_or_else(|| "?".into());
        report.problems.push(Problem {
            severity: Severity::Error,
            code: "import-incomplete",
            file: path,
            offset: None,
            shard: None,
            group: Some(group),
            index: None,
            message: format!(
                "group {group} holds an import of {input} that did not finish; its log may be partial"
            ),
            fix: Some("re-run the same `tern import-topic` (it replaces the partial group)".into()),
        });
        report.clean = false;
    }
    Ok(())
}
