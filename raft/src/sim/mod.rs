//! The deterministic simulator: whole clusters of [`RawNode`](crate::RawNode)s over a faulty
//! network and crash-prone disks, driven by one seed, with the Raft invariants checked after
//! every step and a linearizability check of the clients' history at the end.
//!
//! Run it with `cargo run --release -p tern-raft --example sim -- --seeds 1000` (see
//! `docs/raft.md`). Everything here is test support behind the `sim` feature; production builds
//! of the crate do not contain it.

pub mod cluster;
pub mod kv;
pub mod linearize;
pub mod mutate;
pub mod rng;

pub use cluster::{run_seed, FaultCounts, SeedReport, SimOptions, IDLE_TICKS};
