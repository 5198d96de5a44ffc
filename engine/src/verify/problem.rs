//! A finding of verify-data or repair: what, where, how bad and which command fixes it.

use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Counts as a problem (exit code 1).
    Error,
    /// Reported, harmless to the engine (stray files); does not change the exit code.
    Warning,
}

/// One finding, naming file, offset, shard, group and index where they are known.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// Stable short name, e.g. `torn-tail`, `corruption`, `index-missing`.
    pub code: &'static str,
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub shard: Option<u32>,
    pub group: Option<u64>,
    pub index: Option<u64>,
    pub message: String,
    /// The command that fixes it, if any (naming the data directory once
    /// [`for_dir`](Self::for_dir) has run).
    pub fix: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}] {}", self.code, self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        if let Some(s) = self.shard {
            write!(f, ", shard {s}")?;
        }
        if let Some(g) = self.group {
            write!(f, ", group {g}")?;
        }
        if let Some(i) = self.index {
            write!(f, ", index {i}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// `DIR` in a fix stands for the data directory until [`Problem::for_dir`] names it.
pub(super) const FIX_REPAIR: &str = "tern repair --path DIR";
pub(super) const FIX_SKIP: &str =
    "tern repair --path DIR --skip-corrupt (loses the damaged records)";
pub(super) const FIX_INDEX: &str = "tern rebuild-index --path DIR";

pub(super) fn problem(code: &'static str, file: &Path, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        code,
        file: file.to_path_buf(),
        offset: None,
        shard: None,
        group: None,
        index: None,
        message,
        fix: None,
    }
}

impl Problem {
    pub(super) fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
    pub(super) fn shard(mut self, shard: u32) -> Self {
        self.shard = Some(shard);
        self
    }
    pub(super) fn group(mut self, group: Option<u64>, index: Option<u64>) -> Self {
        self.group = group;
        self.index = index;
        self
    }
    pub(super) fn fix(mut self, fix: &str) -> Self {
        self.fix = Some(fix.to_string());
        self
    }
    /// Names the data directory in the fix, so that it can be pasted as it is.
    pub fn for_dir(mut self, root: &Path) -> Self {
        let shown = root.display().to_string();
        let quoted = if shown
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
        {
            shown
        } else {
            format!("'{}'", shown.replace('\'', "'\\''"))
        };
        self.fix = self
            .fix
            .map(|f| f.replace("--path DIR", &format!("--path {quoted}")));
        self
    }
    pub(super) fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}
