//! The `tern` package as a library: the node's pieces, so the shard driver, the tests and
//! the benchmarks can use them. The `tern` binary (src/main.rs) is the node and operator CLI.

pub mod node;

mod huge_alloc;

/// See [`huge_alloc`]: untrusted length prefixes must not abort the process.
#[global_allocator]
static ALLOCATOR: huge_alloc::HugeAlloc = huge_alloc::HugeAlloc;
