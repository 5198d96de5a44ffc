//! The node-level deterministic simulation: the real shard driver ([`super::shard::Shard`])
//! of 3-5 nodes over simulated disks and a simulated network, on one glommio executor, with
//! simulated time, seeded faults and a checked workload. See docs/simulation.md.
//!
//! Reading order: [`clock`] (simulated ticks) → [`net`] (the `PeerTransport` with loss,
//! duplication, delay, partitions) → [`fence`] (a crashed life cannot touch the next one's
//! files) → [`checker`] (the invariants) → [`cluster`] (nodes, faults, workload, the loop) →
//! [`super::planted`] (bugs planted for the mutation check).

pub mod checker;
pub mod clock;
pub mod cluster;
pub mod fence;
pub mod net;

#[cfg(test)]
mod tests;

pub use super::planted::{self, Planted};
pub use cluster::SimReport;

/// Environment variable: how many seeds the default test runs (default
/// [`SEEDS_DEFAULT`]).
pub const SEEDS_ENV: &str = "TERN_NODE_SIM_SEEDS";
/// Environment variable: run this one seed only (what a failure prints).
pub const SEED_ENV: &str = "TERN_NODE_SIM_SEED";
pub const SEEDS_DEFAULT: u64 = 200;
/// Environment variable: seeds the mutation check runs per planted bug (default
/// [`MUTATION_SEEDS_DEFAULT`]).
pub const MUTATION_SEEDS_ENV: &str = "TERN_NODE_SIM_MUTATION_SEEDS";
pub const MUTATION_SEEDS_DEFAULT: u64 = 30;

/// Runs seed `seed` on a fresh glommio executor (with `bug` planted, if any) and returns what
/// it did, or the first violation, with the command that reproduces it.
pub fn run_seed(seed: u64, bug: Option<Planted>) -> Result<SimReport, String> {
    run_seed_with(seed, bug, cluster::Faults::default())
}

/// Environment variable: seeds the corrupt-records simulation runs (default
/// [`CORRUPT_SEEDS_DEFAULT`]).
pub const CORRUPT_SEEDS_ENV: &str = "TERN_NODE_SIM_CORRUPT_SEEDS";
pub const CORRUPT_SEEDS_DEFAULT: u64 = 12;

/// [`run_seed`] with extra faults.
pub fn run_seed_with(
    seed: u64,
    bug: Option<Planted>,
    faults: cluster::Faults,
) -> Result<SimReport, String> {
    let outcome = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            planted::set(bug);
            let r = cluster::run_with(seed, faults).await;
            planted::set(None);
            r
        })
        .map_err(|e| format!("seed {seed}: executor did not start: {e}"))?
        .join()
        .map_err(|e| format!("seed {seed}: executor failed: {e}"))?;
    outcome.map_err(|v| match bug {
        None => format!(
            "seed {seed}: {v}\n  reproduce: {SEED_ENV}={seed} cargo test -p tern --lib node::sim::tests::node_simulation_seeds -- --nocapture"
        ),
        Some(b) => format!(
            "seed {seed} with {b:?} planted: {v}\n  reproduce: {MUTATION_SEEDS_ENV}={} cargo test -p tern --lib node::sim::tests::planted_bugs_are_caught -- --nocapture",
            seed + 1
        ),
    })
}
