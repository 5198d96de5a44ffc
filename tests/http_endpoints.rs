//! The node's HTTP endpoints against a real `tern serve`: /health, /ready, /metrics (parsed
//! with a Prometheus text parser), /v1/raft and /v1/cluster through `tern raft-info` and
//! `tern cluster-status`; malformed, oversize and too many requests get a 4xx or are closed
//! without holding the node; a taken address refuses the start.

mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serve_support::{p, tern, ServeProcess};

const UP: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses of this test's node: its own loopback address (127.<pid>.<k>.7), so tests
/// running at once never share a port.
fn addrs(k: u32) -> (String, String, String) {
    let ip = format!("127.{}.{}.7", 1 + std::process::id() % 250, 200 + k);
    (
        format!("{ip}:9090"),
        format!("{ip}:9092"),
        format!("{ip}:9093"),
    )
}

/// Sends `raw` on a new connection and reads until the server closes it (bounded):
/// the status code (0 when the server closed without answering) and the whole answer.
fn exchange(http: &str, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(http).expect("connect to the http endpoint");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may close before reading everything (an oversize head): ignore write errors.
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn get(http: &str, path: &str) -> (u16, String) {
    exchange(
        http,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(http: &str, path: &str) -> (u16, String) {
    exchange(
        http,
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("")
}

/// Retries `GET path` (bounded) until it answers `want`.
fn get_until(http: &str, path: &str, want: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, text) = get(http, path);
        if code == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer {want} within {timeout:?}; last: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The metrics docs/operations/metrics.md lists, by the names of their samples.
const METRIC_NAMES: &[&str] = &[
    "tern_raft_commit_index",
    "tern_raft_applied_index",
    "tern_raft_last_index",
    "tern_raft_term",
    "tern_raft_leader_commit_index",
    "tern_raft_state",
    "tern_partition_detected",
    "tern_snapshot_transfer_bytes_total",
    "tern_snapshot_transfer_active",
    "tern_recovery_partitions_pending",
    "tern_recovery_bytes_remaining",
    "tern_rebuild_entries_remaining",
    "tern_shard_failed",
    "tern_wal_bytes_written_total",
    "tern_wal_appends_total",
    "tern_wal_batches_total",
    "tern_wal_fsyncs_total",
    "tern_wal_fsync_duration_seconds",
    "tern_wal_batch_size_bytes",
    "tern_recovery_phase",
    "tern_recovery_shards_replayed",
    "tern_recovery_shards_total",
    "tern_recovery_replayed_bytes",
    "tern_recovery_replayed_records",
    "tern_recovery_groups_caught_up",
    "tern_recovery_groups_total",
    "tern_raft_groups_quiet",
    "tern_kafka_requests_total",
    "tern_kafka_produce_duration_seconds",
    "tern_kafka_fetch_duration_seconds",
];

#[test]
fn http_standalone_health_ready_metrics_raft_info_cluster_status() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (http, kafka, peer) = addrs(1);
    let args = [
        "--data-dir",
        p(&data),
        "--shards",
        "2",
        "--http-addr",
        &http,
        "--kafka-addr",
        &kafka,
        "--peer-addr",
        &peer,
    ];
    let mut node = ServeProcess::start(&args, &tmp.path().join("serve.log"));
    node.wait_for("caught_up: node ready", 1, UP);

    let (code, text) = get(&http, "/health");
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(body(&text))["status"], "ok", "{text}");
    let (code, text) = get(&http, "/ready");
    assert_eq!(code, 200, "{text}");

    let (code, out) = tern(&[
        "create-topic",
        "orders",
        "--partitions",
        "2",
        "--server",
        &kafka,
    ]);
    assert_eq!(code, 0, "{out}");
    let produced = std::process::Command::new(serve_support::TERN)
        .args(["produce", "orders", "--partition", "1", "--server", &kafka])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"one\ntwo\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(produced.status.success(), "{produced:?}");
    // The new partitions elect and apply; ready again once they have.
    get_until(&http, "/ready", 200, UP);

    // POST /admin/snapshot compacts one partition (or every group) up to its applied index.
    let (code, text) = post(&http, "/admin/snapshot?topic=orders&partition=1");
    assert_eq!(code, 200, "{text}");
    let answer = json(body(&text));
    let outcomes = answer["groups"].as_array().expect("groups");
    assert_eq!(outcomes.len(), 1, "{text}");
    assert!(
        outcomes[0]["new_first_index"].as_u64() > outcomes[0]["old_first_index"].as_u64(),
        "the applied prefix is compacted: {text}"
    );
    assert_eq!(
        outcomes[0]["log_start_offset"], 2,
        "both records compacted: {text}"
    );
    let (code, text) = post(&http, "/admin/snapshot");
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        json(body(&text))["groups"].as_array().map(Vec::len),
        Some(3),
        "{text}"
    );
    let (code, text) = post(&http, "/admin/snapshot?topic=nope&partition=0");
    assert_eq!(code, 404, "{text}");
    let (code, text) = post(&http, "/admin/snapshot?topic=orders");
    assert_eq!(code, 400, "{text}");
    let (code, text) = get(&http, "/admin/snapshot");
    assert_eq!(code, 405, "{text}");

    // /metrics parses as Prometheus text and has every listed metric.
    let (code, text) = get(&http, "/metrics");
    assert_eq!(code, 200, "{text}");
    let lines = body(&text).lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    for name in METRIC_NAMES {
        assert!(
            scrape.samples.iter().any(|s| s.metric == *name),
            "{name} missing from /metrics:\n{}",
            body(&text)
        );
    }
    let produce_requests = scrape
        .samples
        .iter()
        .find(|s| s.metric == "tern_kafka_requests_total" && s.labels.get("api") == Some("Produce"))
        .expect("Produce requests counted");
    assert!(
        matches!(produce_requests.value, prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) if v >= 1.0),
        "{produce_requests:?}"
    );
    let commit = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "tern_raft_commit_index"
                && s.labels.get("topic") == Some("orders")
                && s.labels.get("partition") == Some("1")
        })
        .expect("orders-1 commit index");
    assert!(
        matches!(commit.value, prometheus_parse::Value::Gauge(v) if v >= 2.0),
        "{commit:?}"
    );

    // raft-info and cluster-status print what /v1/raft and /v1/cluster return.
    let (code, out) = tern(&["raft-info", "--http", &http, "--json"]);
    assert_eq!(code, 0, "{out}");
    let raft = json(&out);
    let groups = raft["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3, "controller + 2 partitions: {out}");
    for g in groups {
        assert_eq!(g["role"], "leader", "{out}");
        assert_eq!(g["leader"], 1, "{out}");
        assert!(g["commit"].as_u64() >= Some(1), "{out}");
        assert_eq!(g["voters"], serde_json::json!([1]), "{out}");
    }
    let (code, out) = tern(&["raft-info", "--http", &http]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("GROUP") && out.contains("orders"), "{out}");

    let (code, out) = tern(&["cluster-status", "--http", &http, "--json"]);
    assert_eq!(code, 0, "{out}");
    let cluster = json(&out);
    assert_eq!(cluster["members"][0]["node_id"], 1, "{out}");
    assert_eq!(cluster["members"][0]["health"], "ok", "{out}");
    assert_eq!(cluster["members"][0]["http_addr"], http.as_str(), "{out}");
    let partitions = cluster["topics"][0]["partitions"]
        .as_array()
        .expect("partitions");
    assert_eq!(partitions.len(), 2, "{out}");
    for part in partitions {
        assert_eq!(part["leader"], 1, "{out}");
        assert_eq!(part["replicas"][0]["lag"], 0, "{out}");
    }
    let (code, out) = tern(&["cluster-status", "--http", &http]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("orders") && out.contains("HEALTH"), "{out}");

    // Nobody there: exit 3 with what to check.
    let (other, _, _) = addrs(9);
    let (code, out) = tern(&["cluster-status", "--http", &other, "--timeout-s", "2"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("cannot reach"), "{out}");
}

#[test]
fn http_malformed_oversize_and_too_many_requests_get_4xx_and_do_not_hold_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (http, kafka, peer) = addrs(2);
    let args = [
        "--data-dir",
        p(&data),
        "--shards",
        "1",
        "--http-addr",
        &http,
        "--kafka-addr",
        &kafka,
        "--peer-addr",
        &peer,
    ];
    let mut node = ServeProcess::start(&args, &tmp.path().join("serve.log"));
    node.wait_for("http listener bound", 1, UP);

    let (code, text) = exchange(&http, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(code, 400, "{text}");
    let mut huge = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend(b"\r\n\r\n");
    let (code, text) = exchange(&http, &huge);
    assert_eq!(code, 431, "{text}");
    let (code, text) = exchange(
        &http,
        b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n",
    );
    assert_eq!(code, 413, "{text}");
    let (code, _) = get(&http, "/no-such-thing");
    assert_eq!(code, 404);
    let (code, _) = exchange(
        &http,
        b"DELETE /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405);

    // Membership requests with bad input: typed 4xx answers with a message, never a crash.
    let send = |method: &str, path: &str, body: &str| {
        exchange(
            &http,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    for bad in [
        "",
        "not json",
        "{\"node_id\": 0, \"peer_addr\": \"127.0.0.9:9093\"}",
        "{\"node_id\": 9, \"peer_addr\": \"nowhere\"}",
        "{\"node_id\": 9, \"peer_addr\": \"127.0.0.9:9093\", \"extra\": 1}",
        "{\"node_id\": -1, \"peer_addr\": \"127.0.0.9:9093\"}",
    ] {
        let (code, text) = send("POST", "/admin/members", bad);
        assert_eq!(code, 400, "{bad:?}: {text}");
        assert!(json(body(&text))["error"].is_string(), "{text}");
    }
    let (code, text) = send("DELETE", "/admin/members/abc", "");
    assert_eq!(code, 400, "{text}");
    let (code, _) = send("GET", "/admin/members", "");
    assert_eq!(code, 405);
    // Refused by the controller (applied as a rejection): an unknown member, the last one.
    get_until(&http, "/ready", 200, UP);
    let deadline = Instant::now() + UP;
    let text = loop {
        let (code, text) = send("DELETE", "/admin/members/9", "");
        if code == 409 {
            break text;
        }
        // 503 while the new controller leader registers its members.
        assert!(code == 503 && Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body(&text).contains("unknown member 9"), "{text}");
    let (code, text) = send("DELETE", "/admin/members/1", "");
    assert_eq!(code, 409, "{text}");
    assert!(body(&text).contains("last one"), "{text}");

    // Idle connections up to the limit: one more is closed at once, unanswered.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&http).expect("connect"))
        .collect();
    // Every idle connection has been accepted once a request on the last one would be the
    // 65th; wait (bounded) until the server refuses.
    let deadline = Instant::now() + UP;
    loop {
        let (code, text) = get(&http, "/health");
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "65th connection still served: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(idle);
    // Freed: the node answers again.
    get_until(&http, "/health", 200, UP);
    assert!(node.log_text().contains("too many connections"));
}

#[test]
fn http_address_taken_refuses_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (http, kafka, peer) = addrs(3);
    let _squatter = std::net::TcpListener::bind(&http).expect("bind the http address first");
    let args = [
        "--data-dir",
        p(&data),
        "--http-addr",
        &http,
        "--kafka-addr",
        &kafka,
        "--peer-addr",
        &peer,
    ];
    let mut node = ServeProcess::start(&args, &tmp.path().join("serve.log"));
    let status = node.wait_exit(UP);
    assert_eq!(status.code(), Some(2), "{}", node.log_text());
    assert!(node.log_text().contains("http_addr"), "{}", node.log_text());
}
