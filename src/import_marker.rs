//! The marker of an import in progress: `<data dir>/import-<group>.incomplete`.
//!
//! `tern import-topic` writes it (temp file, fsync, rename, directory fsync) before the
//! first record of the group and removes it (then fsyncs the directory) only after the last
//! one is durable. So whatever stops an import — ENOSPC, `kill -9`, bad input found late —
//! either leaves no trace of the group (a failed import rolls the group back and removes
//! the marker) or leaves the marker, which `verify-data` reports as `import-incomplete`,
//! `export-topic` refuses, and a re-run of the import replaces. Its text names the group,
//! the input file and when the import started, for the operator.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_engine::engine::sync_dir_std;

use crate::error::{CliError, CliResult};

const PREFIX: &str = "import-";
const SUFFIX: &str = ".incomplete";

pub fn marker_path(root: &Path, group: u64) -> PathBuf {
    root.join(format!("{PREFIX}{group}{SUFFIX}"))
}

/// The group of a marker file name, if it is one.
pub fn parse_marker_name(name: &str) -> Option<u64> {
    let g: u64 = name
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()?;
    (name == format!("{PREFIX}{g}{SUFFIX}")).then_some(g)
}

/// Markers in `root`, as (group, path), by group. (A leftover `.tmp` of a marker is a plain
/// stray file: the import it belonged to never wrote a record.)
pub fn markers(root: &Path) -> CliResult<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| CliError::io(root, e))?
        .flatten()
        .filter_map(|e| parse_marker_name(&e.file_name().to_string_lossy()).map(|g| (g, e.path())))
        .collect();
    out.sort();
    Ok(out)
}

/// Makes the marker durable before the import writes anything of the group.
pub fn create(root: &Path, group: u64, input: &Path) -> CliResult<()> {
    let path = marker_path(root, group);
    let tmp = path.with_extension("incomplete.tmp");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let text = format!(
        "group={group}\ninput={}\nstarted_unix_ms={started}\n",
        input.display()
    );
    let mut f = File::create(&tmp).map_err(|e| CliError::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| CliError::io(&path, e))?;
    Ok(sync_dir_std(root)?)
}

/// Removes the marker once the group is complete (or rolled back), durably.
pub fn remove(root: &Path, group: u64) -> CliResult<()> {
    let path = marker_path(root, group);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(sync_dir_std(root)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip_and_reject_lookalikes() {
        let p = marker_path(Path::new("/d"), 42);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(parse_marker_name(name), Some(42));
        for bad in [
            "import-.incomplete",
            "import-042.incomplete",
            "import-4.incomplete.tmp",
            "import-x.incomplete",
            "import-+4.incomplete",
        ] {
            assert_eq!(parse_marker_name(bad), None, "{bad}");
        }
    }
}
