//! The node: what `tern serve` runs. Reading order: [`config`] (settings and where they come
//! from) → [`identity`] (the data directory's NODE file) → [`bootstrap`] (may a new node
//! vote?) → [`controller`] (cluster metadata, group 0) → [`serve`] (start-up, the shards) →
//! [`stop`] (signals, a bounded shutdown).

pub mod bootstrap;
pub mod config;
pub mod controller;
pub mod identity;
pub mod serve;
pub mod stop;
