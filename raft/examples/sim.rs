//! The deterministic Raft simulator.
//!
//! ```text
//! cargo run --release -p tern-raft --example sim -- --seeds 1000 [--first 0] [--steps 1000]
//! cargo run --release -p tern-raft --example sim -- --seed 8812 [--verbose]
//! cargo run --release -p tern-raft --example sim -- --seeds 1000 --mutate 50
//! ```
//! `--mutate N`: before N per mille of the delivered messages, deliver a copy made
//! inconsistent (`sim/mutate.rs`) that the receiver must refuse or survive unharmed.
//! Prints counts per fault class and ends with
//! `seeds=N steps=N violations=0 nonlinearizable=0 stuck=0`; each failing seed prints the
//! command that reproduces it. Exits 1 if any seed failed.

use tern_raft::sim::linearize::Verdict;
use tern_raft::sim::{run_seed, FaultCounts, SimOptions, IDLE_TICKS};

fn main() {
    let mut seeds = 100u64;
    let mut first = 0u64;
    let mut steps = SimOptions::new(0).steps;
    let mut single: Option<u64> = None;
    let mut verbose = false;
    let mut mutate = 0u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| -> u64 {
            match args.get(i + 1).map(|v| v.parse::<u64>()) {
                Some(Ok(v)) => v,
                _ => {
                    eprintln!("{} needs a number", args[i]);
                    std::process::exit(2);
                }
            }
        };
        match args[i].as_str() {
            "--seeds" => seeds = value(i),
            "--first" => first = value(i),
            "--steps" => steps = value(i),
            "--seed" => single = Some(value(i)),
            "--mutate" => mutate = value(i),
            "--verbose" => {
                verbose = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; see the top of examples/sim.rs");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let range = match single {
        Some(s) => s..s + 1,
        None => first..first + seeds,
    };
    let (mut total_steps, mut violations, mut nonlinear, mut stuck, mut unknown) = (0, 0, 0, 0, 0);
    let (mut ops_ok, mut ops_unknown, mut three, mut five) = (0, 0, 0, 0);
    // Idle messages per seed, [plain, quiesce]: (seeds, messages).
    let mut idle = [(0u64, 0u64); 2];
    let mut faults = FaultCounts::default();
    let count = range.end - range.start;
    for seed in range {
        let mut opts = SimOptions::new(seed);
        opts.steps = steps;
        opts.mutate_per_mille = mutate;
        let report = run_seed(&opts);
        total_steps += report.steps;
        faults.add(&report.faults);
        ops_ok += report.ops_ok;
        ops_unknown += report.ops_unknown;
        if !report.failed() {
            let slot = &mut idle[report.quiesce as usize];
            slot.0 += 1;
            slot.1 += report.idle_msgs;
        }
        if report.voters == 3 {
            three += 1
        } else {
            five += 1
        }
        if !report.violations.is_empty() {
            violations += 1;
        }
        match report.verdict {
            Verdict::NotLinearizable { .. } => nonlinear += 1,
            Verdict::Unknown => unknown += 1,
            Verdict::Linearizable => {}
        }
        if report.stuck {
            stuck += 1;
        }
        if report.failed() || verbose {
            println!(
                "seed {seed}: voters={} violations={:?} verdict={:?} stuck={} quiesce={} idle_msgs={}",
                report.voters, report.violations, report.verdict, report.stuck, report.quiesce, report.idle_msgs
            );
        }
        if report.stuck {
            println!("seed {seed} state:{}", report.detail);
        }
        if report.failed() {
            let extra = if mutate > 0 {
                format!(" --mutate {mutate}")
            } else {
                String::new()
            };
            println!("seed {seed} failed: cargo run --release -p tern-raft --example sim -- --seed {seed}{extra}");
        }
    }
    println!("clusters: 3-voter={three} 5-voter={five}");
    println!("client ops: acknowledged={ops_ok} unknown-outcome={ops_unknown} linearizability-undecided={unknown}");
    for (name, (n, msgs)) in ["plain", "quiesce"].iter().zip(idle) {
        let per_seed = msgs as f64 / n.max(1) as f64;
        println!(
            "idle messages over {IDLE_TICKS} ticks, {name} seeds: {per_seed:.1} per seed ({n} seeds)"
        );
    }
    println!("faults:");
    let optional = if mutate > 0 {
        faults.optional_rows()
    } else {
        Vec::new()
    };
    for (name, n) in faults.rows().into_iter().chain(optional) {
        println!("  {name:<24} {n}");
    }
    println!("seeds={count} steps={total_steps} violations={violations} nonlinearizable={nonlinear} stuck={stuck}");
    if violations + nonlinear + stuck > 0 {
        std::process::exit(1);
    }
}
