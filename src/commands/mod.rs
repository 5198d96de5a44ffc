//! One file per group of commands.

pub mod dump;
pub mod generate;
pub mod import;
pub mod online;
pub mod repair;
pub mod segment;
pub mod serve;
pub mod topic;
pub mod verify;

use serde::Serialize;

use crate::error::{CliError, CliResult};
use crate::say;

/// Prints `value` as one JSON document, or runs `human` to print text.
pub fn emit<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> CliResult<()>,
) -> CliResult<()> {
    if json {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Usage(format!("JSON encoding failed: {e}")))?;
        say!("{text}")
    } else {
        human()
    }
}

/// Bytes in a human (binary) unit: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(64 << 20), "64.0 MiB");
    }
}
