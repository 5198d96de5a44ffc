//! One file per group of commands.

pub mod generate;
pub mod online;
pub mod repair;
pub mod segment;
pub mod serve;
pub mod topic;
pub mod verify;

use serde::Serialize;

use crate::error::{CliError, CliResult};

/// Prints `value` as one JSON document, or runs `human` to print text.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) -> CliResult<()> {
    if json {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
        println!("{text}");
    } else {
        human();
    }
    Ok(())
}

/// Bytes in a human unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
