//! Everything the CLI prints on stdout goes through [`say!`](crate::say), so that a closed
//! stdout (`tern dump … | head -2`) ends the command quietly, as it does for `grep` or `cat`,
//! instead of panicking inside `println!` (exit 101). The command returns
//! [`CliError::StdoutClosed`] from wherever it was printing; guards (the directory lock,
//! temp files) are dropped on the way out and `main` exits with
//! [`EXIT_STDOUT_CLOSED`](crate::error::EXIT_STDOUT_CLOSED) without a message.

use std::io;

use crate::error::CliError;

/// Maps a failed write to stdout: a reader that went away is [`CliError::StdoutClosed`], any
/// other failure (a full disk behind a redirect) an I/O error on `<stdout>`.
pub fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::StdoutClosed
    } else {
        CliError::io("<stdout>", e)
    }
}

/// `println!` that returns `CliResult<()>` instead of panicking when stdout is closed.
#[macro_export]
macro_rules! say {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock()).map_err($crate::output::stdout_error)
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::stdout_error)
    }};
}

/// Flushes stdout (the end of a document printed in pieces).
pub fn flush() -> Result<(), CliError> {
    use std::io::Write as _;
    io::stdout().lock().flush().map_err(stdout_error)
}

/// `1 problem`, `2 problems`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
