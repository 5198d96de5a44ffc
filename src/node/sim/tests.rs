use super::*;

/// Seeds one process runs. glommio 0.9 never frees the tasks still pending when an executor
/// ends, nor what they hold (a seed's simulated disks and cluster: about 20 MB), so a long
/// run would grow by that much per seed (3 000 seeds filled 24 GiB). Longer runs go to child
/// processes of this many seeds each.
const SEEDS_PER_PROCESS: usize = 100;
/// Set for a child process: the seeds `first..end` it runs.
const RANGE_ENV: &str = "TERN_NODE_SIM_RANGE";

fn seeds() -> Vec<u64> {
    if let Ok(one) = std::env::var(SEED_ENV) {
        return vec![one.parse().expect("TERN_NODE_SIM_SEED is a number")];
    }
    if let Ok(range) = std::env::var(RANGE_ENV) {
        let (first, end) = range
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .expect("TERN_NODE_SIM_RANGE is first..end");
        return (first..end).collect();
    }
    let n = std::env::var(SEEDS_ENV)
        .ok()
        .map(|s| s.parse().expect("TERN_NODE_SIM_SEEDS is a number"))
        .unwrap_or(SEEDS_DEFAULT);
    (0..n).collect()
}

/// Runs `seeds` in child processes of this test binary, [`SEEDS_PER_PROCESS`] each; their
/// output goes straight to this process's stdout and stderr.
fn run_in_children(seeds: &[u64]) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut failed = Vec::new();
    for chunk in seeds.chunks(SEEDS_PER_PROCESS) {
        let (first, end) = (chunk[0], chunk[chunk.len() - 1] + 1);
        let status = std::process::Command::new(&exe)
            .args([
                "node::sim::tests::node_simulation_seeds",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RANGE_ENV, format!("{first}..{end}"))
            .status()
            .expect("the test binary starts");
        if !status.success() {
            failed.push(format!("{first}..{end}"));
        }
    }
    assert!(
        failed.is_empty(),
        "the node simulation failed in seed ranges {failed:?} (their output is above)"
    );
}

#[test]
fn node_simulation_seeds() {
    let seeds = seeds();
    if seeds.len() > SEEDS_PER_PROCESS {
        run_in_children(&seeds);
        return;
    }
    let mut failures = Vec::new();
    let mut total = SimReport::default();
    for &seed in &seeds {
        match run_seed(seed, None) {
            Ok(r) => {
                total.ticks += r.ticks;
                total.crashes += r.crashes;
                total.wipes += r.wipes;
                total.restarts += r.restarts;
                total.partitions += r.partitions;
                total.acks += r.acks;
                total.idempotent_acks += r.idempotent_acks;
                total.idempotent_retries_acked += r.idempotent_retries_acked;
                total.replicas_moved += r.replicas_moved;
                total.fetches += r.fetches;
                total.entries_compared += r.entries_compared;
                total.stream_chunks += r.stream_chunks;
                total.trace ^= r.trace;
            }
            Err(e) => {
                eprintln!("{e}");
                failures.push(e);
            }
        }
    }
    eprintln!(
        "node simulation: {total:?}, {} failing seeds",
        failures.len()
    );
    // Seeds of 4 or 5 nodes remove a member and move its replicas; any run of a few dozen
    // seeds has some.
    if seeds.len() >= 50 {
        assert!(total.replicas_moved > 0, "no seed moved a replica");
        // Wiped nodes rebuild their partitions through the recovery stream first.
        assert!(
            total.stream_chunks > 0,
            "no rebuilding group pulled a chunk"
        );
        // Idempotent producers retry batches whose answers were lost, across failovers.
        assert!(
            total.idempotent_retries_acked > 0,
            "no idempotent batch was acknowledged after a retry"
        );
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed; first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7, None);
    let b = run_seed(7, None);
    assert_eq!(a, b);
    assert!(a.is_ok_and(|r| r.acks > 0));
}

/// The mutation check: with each planted bug on, the simulation must catch it on some seeds.
/// Prints how many of the seeds run caught each (docs/simulation.md quotes the figures).
#[test]
fn planted_bugs_are_caught() {
    let n: u64 = std::env::var(MUTATION_SEEDS_ENV)
        .ok()
        .map(|s| s.parse().expect("TERN_NODE_SIM_MUTATION_SEEDS is a number"))
        .unwrap_or(MUTATION_SEEDS_DEFAULT);
    for bug in [
        Planted::AckBeforeMajority,
        Planted::ReuseOffsetAfterFailover,
        Planted::ForgetOwnProducerBatches,
    ] {
        let mut caught = 0;
        let mut first = None;
        for seed in 0..n {
            if let Err(e) = run_seed(seed, Some(bug)) {
                caught += 1;
                first.get_or_insert(e);
            }
        }
        eprintln!("planted {bug:?}: caught by {caught} of {n} seeds; first: {first:?}");
        assert!(
            caught > 0,
            "planted {bug:?} was caught by none of {n} seeds"
        );
    }
}

/// Issue 12: bit rot in committed records on one replica is repaired from the others, while
/// the network and crash faults of the default run go on; every invariant of the default run
/// holds, and every damaged entry reads back as its replicas hold it by the end.
#[test]
fn node_simulation_corrupt_records_on_one_replica_repaired() {
    let n: u64 = std::env::var(CORRUPT_SEEDS_ENV)
        .ok()
        .map(|s| s.parse().expect("TERN_NODE_SIM_CORRUPT_SEEDS is a number"))
        .unwrap_or(CORRUPT_SEEDS_DEFAULT);
    let faults = cluster::Faults {
        corrupt_records: true,
    };
    let mut corrupted = 0;
    let mut failures = Vec::new();
    for seed in 0..n {
        match run_seed_with(seed, None, faults) {
            Ok(r) if r.repaired < r.corrupted => failures.push(format!(
                "seed {seed}: {} records damaged, {} repairs",
                r.corrupted, r.repaired
            )),
            Ok(r) => corrupted += r.corrupted,
            Err(e) => failures.push(format!(
                "{e}\n  (corrupt-records run: {CORRUPT_SEEDS_ENV}={} cargo test -p tern --lib node::sim::tests::node_simulation_corrupt_records_on_one_replica_repaired)",
                seed + 1
            )),
        }
    }
    eprintln!("corrupt-records simulation: {n} seeds, {corrupted} records damaged and repaired");
    assert!(
        failures.is_empty(),
        "{} seeds failed; first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        corrupted >= n / 2,
        "only {corrupted} records damaged over {n} seeds: the fault does not find sealed segments"
    );
}
