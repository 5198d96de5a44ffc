//! The real Kafka clients the tests drive: kcat and kafka-python (Debian's python3-kafka 2.x
//! and 3.x from the virtualenv `.ci/run` creates). A missing client makes its test print why
//! and skip, never fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A Python interpreter with `kafka` importable at a version starting with `major` ("2." or
/// "3."): Debian's `/usr/bin/python3` for 2.x; for 3.x `TERN_KAFKA_PYTHON` or the
/// virtualenv `.ci/run` creates under `target/`.
pub fn kafka_python(major: &str) -> Option<PathBuf> {
    let python = if major.starts_with('2') {
        PathBuf::from("/usr/bin/python3")
    } else {
        std::env::var_os("TERN_KAFKA_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-python-venv/bin/python")
            })
    };
    let probe =
        format!("import kafka,sys; sys.exit(0 if kafka.__version__.startswith('{major}') else 1)");
    succeeds(Command::new(&python).args(["-c", &probe])).then_some(python)
}

pub fn have_kcat() -> bool {
    succeeds(Command::new("kcat").arg("-V"))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a client command to its end, killed after `wait`; panics with its output unless it
/// succeeded.
pub fn run_client(cmd: &mut Command, stdin: Option<&[u8]>, wait: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start client");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let start = Instant::now();
    while child.try_wait().expect("wait client").is_none() {
        if start.elapsed() > wait {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
