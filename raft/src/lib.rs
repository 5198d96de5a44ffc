//! tern-raft: a sans-IO Raft core (see docs/raft.md once written).
#![forbid(unsafe_code)]
