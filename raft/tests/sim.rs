//! Runs the deterministic simulator over many seeds. `TERN_SIM_SEEDS=5000` runs more;
//! `TERN_SIM_FIRST=N` starts elsewhere. A failure names the command that reproduces it.

use tern_raft::sim::linearize::Verdict;
use tern_raft::sim::{run_seed, FaultCounts, SimOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn simulator_finds_no_violation_nonlinearizable_history_or_stuck_cluster() {
    let seeds = env_u64("TERN_SIM_SEEDS", 500);
    let first = env_u64("TERN_SIM_FIRST", 0);
    let mut failures = Vec::new();
    let mut ops_ok = 0;
    let mut faults = FaultCounts::default();
    for seed in first..first + seeds {
        let report = run_seed(&SimOptions::new(seed));
        ops_ok += report.ops_ok;
        faults.add(&report.faults);
        if report.failed() {
            failures.push(format!(
                "seed {seed} failed ({:?} {:?} stuck={}): cargo run --release -p tern-raft --example sim -- --seed {seed}",
                report.violations, report.verdict, report.stuck
            ));
        }
        assert_ne!(
            report.verdict,
            Verdict::Unknown,
            "seed {seed}: linearizability search budget exhausted"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ops_ok > seeds * 20,
        "clients made too little progress: {ops_ok} ops over {seeds} seeds"
    );
    // Every fault class fires; leader-churn episodes run to their last phase (Figure 8).
    if seeds >= 100 {
        for (name, n) in faults.rows() {
            assert!(n > 0, "fault class {name} never fired over {seeds} seeds");
        }
    }
}
