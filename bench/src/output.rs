//! Everything tern-bench prints on stdout goes through [`say!`](crate::say): a closed stdout
//! (`tern-bench wal | head -1`) stops the run quietly — the data directory is removed as on
//! any other early exit — instead of panicking inside `println!`. Same rule as the `tern`
//! CLI's `src/output.rs`.

use std::io;

use crate::error::BenchError;

pub fn stdout_error(e: io::Error) -> BenchError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        BenchError::StdoutClosed
    } else {
        BenchError::io("<stdout>", e)
    }
}

/// `println!` that returns `Result<()>` instead of panicking when stdout is closed.
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
