//! `tern-bench etcd`: the etcd baseline of issue 13. Puts R-byte values into a running etcd
//! cluster through its v3 JSON gateway (`POST /v3/kv/put`, HTTP/1.1 keep-alive), driven by
//! the same load generator as `tern-bench produce` (`thread_load`): same concurrency, open-loop
//! schedule and latency accounting. A put is acknowledged by etcd after a quorum of members
//! fsynced it, as a tern produce with acks=all is.
//!
//! Worker w talks to endpoint w mod E, as etcd's own client spreads connections over the
//! endpoints it is given; a follower forwards the put to the leader.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::report::{latency_table, round1, thousands, LatencyUs};
use crate::samples::SamplesArgs;
use crate::thread_load::{self, Op, Schedule};

/// Bound of one response's header block and body: a put's answer is a few hundred bytes.
const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// A connect or read that takes longer than this fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys cycle through this many per worker, so the key space stays bounded on long runs.
const KEYS_PER_WORKER: u64 = 1024;

#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// Client URLs' HOST:PORT of the members, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Bytes of each value.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Worker threads, each with its own connection, one put in flight each.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Open loop: puts per second over all workers. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print one JSON object on one line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub samples: SamplesArgs,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    mode: &'static str,
    endpoints: Vec<String>,
    value_bytes: usize,
    concurrency: usize,
    rate: Option<f64>,
    seconds: f64,
    puts: u64,
    puts_per_s: f64,
    mb_per_s: f64,
    latency: LatencyUs,
}

fn bad(arg: &'static str, why: impl Into<String>) -> BenchError {
    BenchError::Arg {
        arg,
        why: why.into(),
    }
}

pub fn run(a: &EtcdArgs) -> Result<()> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if a.endpoints.is_empty() || a.endpoints.iter().any(|e| e.is_empty()) {
        return Err(bad("endpoints", "give at least one HOST:PORT"));
    }
    if a.value_bytes == 0 || a.concurrency == 0 {
        return Err(bad(
            "value-bytes",
            "value bytes and concurrency must be at least 1",
        ));
    }
    if !(positive(a.duration) && a.warmup.is_finite() && a.warmup >= 0.0) {
        return Err(bad("duration", "duration must be > 0 and warmup >= 0"));
    }
    if a.rate.is_some_and(|r| !positive(r)) {
        return Err(bad("rate", "must be > 0"));
    }
    // Random-looking bytes are pointless here (etcd does not compress); the base64 text is
    // what travels, so encode the value once.
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; a.value_bytes]);
    let schedule = Schedule {
        workers: a.concurrency,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        rate: a.rate,
    };
    let totals = thread_load::run(schedule, |w| {
        let endpoint = &a.endpoints[w % a.endpoints.len()];
        Ok(PutOp {
            conn: HttpConnection::open(endpoint)?,
            worker: w,
            value: &value,
            value_bytes: a.value_bytes as u64,
        })
    })?;
    a.samples
        .save("etcd", &totals.latency_ns, &totals.bytes_per_second)?;
    let report = Report {
        bench: "etcd",
        mode: if a.rate.is_some() { "open" } else { "closed" },
        endpoints: a.endpoints.clone(),
        value_bytes: a.value_bytes,
        concurrency: a.concurrency,
        rate: a.rate,
        seconds: totals.seconds,
        puts: totals.ops,
        puts_per_s: round1(totals.ops as f64 / totals.seconds),
        mb_per_s: round1(totals.payload_bytes as f64 / totals.seconds / 1e6),
        latency: LatencyUs::from_ns(&totals.latency_ns),
    };
    if a.json {
        crate::say!("{}", serde_json::to_string(&report)?)?;
    } else {
        crate::say!(
            "tern-bench etcd ({} loop): {} workers, {}-byte values, {} endpoint(s)",
            report.mode,
            report.concurrency,
            report.value_bytes,
            report.endpoints.len()
        )?;
        crate::say!(
            "  {} puts/s  {} MB/s  {} puts in {:.1} s",
            thousands(report.puts_per_s),
            report.mb_per_s,
            thousands(report.puts as f64),
            report.seconds
        )?;
        crate::say!("{}", latency_table(&report.latency))?;
    }
    Ok(())
}

struct PutOp<'a> {
    conn: HttpConnection,
    worker: usize,
    value: &'a str,
    value_bytes: u64,
}

impl Op for PutOp<'_> {
    fn send(&mut self, seq: u64) -> Result<u64> {
        let key = format!("tern-bench/{}/{}", self.worker, seq % KEYS_PER_WORKER);
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let body = format!(r#"{{"key":"{key}","value":"{}"}}"#, self.value);
        self.conn.post("/v3/kv/put", body.as_bytes())?;
        Ok(self.value_bytes)
    }
}

/// One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer whole.
struct HttpConnection {
    host: String,
    reader: BufReader<TcpStream>,
}

impl HttpConnection {
    fn open(addr: &str) -> Result<HttpConnection> {
        let io = |e| BenchError::io(addr, e);
        let stream = TcpStream::connect(addr).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        Ok(HttpConnection {
            host: addr.to_string(),
            reader: BufReader::new(stream),
        })
    }

    /// POSTs `body` to `path`; fails unless the answer is 200 OK. Returns the answer's body.
    fn post(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let host = self.host.clone();
        let io = |e| BenchError::io(&host, e);
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let (status, answer) = read_response(&mut self.reader).map_err(io)?;
        if status != 200 {
            let text = String::from_utf8_lossy(&answer);
            return Err(BenchError::io(
                &self.host,
                std::io::Error::other(format!("POST {path}: HTTP {status}: {text}")),
            ));
        }
        Ok(answer)
    }
}

fn protocol_error(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

/// Reads one HTTP/1.1 response: status code and body (Content-Length or chunked).
fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    let mut header_bytes = 0usize;
    let mut read_line = |r: &mut R, line: &mut String| -> std::io::Result<()> {
        line.clear();
        let n = r.take(RESPONSE_BYTES_MAX as u64).read_line(line)?;
        header_bytes += n;
        if n == 0 {
            return Err(protocol_error("connection closed mid-response"));
        }
        if header_bytes > RESPONSE_BYTES_MAX {
            return Err(protocol_error("response header too long"));
        }
        Ok(())
    };
    read_line(r, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| protocol_error(format!("not an HTTP status line: {line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        read_line(r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .map_err(|_| protocol_error(format!("bad Content-Length {value:?}")))?;
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(r, &mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| protocol_error(format!("bad chunk size {size:?}")))?;
            if body.len() + size > RESPONSE_BYTES_MAX {
                return Err(protocol_error("response body too long"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(r, &mut line)?; // the CRLF after the chunk (or after the trailers)
            if size == 0 {
                break;
            }
        }
    } else {
        let n = length.ok_or_else(|| protocol_error("response without Content-Length"))?;
        if n > RESPONSE_BYTES_MAX {
            return Err(protocol_error("response body too long"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked_responses() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = std::io::Cursor::new(text.as_bytes());
        assert_eq!(read_response(&mut r).unwrap(), (200, b"hello".to_vec()));
        assert_eq!(read_response(&mut r).unwrap(), (404, b"abcde".to_vec()));
    }

    #[test]
    fn refuses_truncated_or_malformed_responses() {
        for text in [
            "",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut r = std::io::Cursor::new(text.as_bytes());
            assert!(read_response(&mut r).is_err(), "{text:?}");
        }
    }
}
