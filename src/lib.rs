//! The `tern` package as a library: the node's pieces, so the shard driver, the tests and
//! the benchmarks can use them. The `tern` binary (src/main.rs) is the node and operator CLI.

pub mod node;
