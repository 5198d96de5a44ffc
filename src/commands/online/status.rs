//! `tern raft-info` and `tern cluster-status`: what a node's `/v1/raft` and `/v1/cluster`
//! answer (docs/operations/node.md), as a table or, with --json, as the node's JSON.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::http_client::{self, HttpError};
use super::Out;
use crate::error::{CliResult, EXIT_CLEAN};
use crate::Common;

/// Where the node's HTTP endpoint is.
#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// HTTP address of the node (its --http-addr, HOST:PORT).
    #[arg(
        long = "http",
        default_value = "127.0.0.1:9090",
        value_name = "HOST:PORT"
    )]
    pub http: String,
    /// Bound on the whole request, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout_s: u64,
}

#[derive(Args, Debug)]
pub struct RaftInfoArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub common: Common,
}

fn fetch(args: &HttpArgs, path: &str) -> CliResult<Value> {
    let body = http_client::get(&args.http, path, Duration::from_secs(args.timeout_s.max(1)))?;
    serde_json::from_slice(&body).map_err(|e| {
        HttpError::Refused {
            addr: args.http.clone(),
            path: path.to_string(),
            status: 200,
            body: format!("not JSON ({e}): is this a tern node's HTTP address?"),
        }
        .into()
    })
}

/// `-` for a JSON null or a missing field.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        s
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print(lines: &[String]) -> CliResult<u8> {
    let mut out = Out::new();
    for l in lines {
        if !out.line(l)? {
            return Ok(EXIT_CLEAN);
        }
    }
    out.flush()?;
    Ok(EXIT_CLEAN)
}

fn problems(doc: &Value, lines: &mut Vec<String>) {
    if let Some(p) = doc["problems"].as_array().filter(|p| !p.is_empty()) {
        lines.push(String::new());
        lines.push("problems:".into());
        lines.extend(p.iter().map(|x| format!("  {}", cell(x))));
    }
}

pub fn raft_info(args: RaftInfoArgs) -> CliResult<u8> {
    let doc = fetch(&args.http, "/v1/raft")?;
    if args.common.json {
        return print(&[doc.to_string()]);
    }
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = doc["groups"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|g| {
            let topic = if g["topic"].is_null() {
                "(controller)".to_string()
            } else {
                cell(&g["topic"])
            };
            vec![
                cell(&g["group"]),
                topic,
                cell(&g["partition"]),
                cell(&g["shard"]),
                cell(&g["role"]),
                cell(&g["term"]),
                cell(&g["vote"]),
                cell(&g["leader"]),
                cell(&g["commit"]),
                cell(&g["applied"]),
                cell(&g["last_index"]),
                cell(&g["leader_commit"]),
                cell(&g["voters"]),
                cell(&g["learners"]),
            ]
        })
        .collect();
    let mut lines = vec![format!("node {}", cell(&doc["node_id"]))];
    lines.extend(table(
        &[
            "GROUP",
            "TOPIC",
            "PART",
            "SHARD",
            "ROLE",
            "TERM",
            "VOTE",
            "LEADER",
            "COMMIT",
            "APPLIED",
            "LAST",
            "LEADER_COMMIT",
            "VOTERS",
            "LEARNERS",
        ],
        &rows,
    ));
    problems(&doc, &mut lines);
    print(&lines)
}

/// Bound on asking each other member for its own rebuild numbers: a silent member costs
/// the command at most this.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// Every member's `rebuild` section: the asked node's from its own document, the others'
/// from their `/v1/cluster` (members the asked node sees as unreachable are not asked).
/// Each item is `{"node_id", "rebuild"}` or `{"node_id", "error"}`.
fn rebuild_by_node(args: &HttpArgs, doc: &Value) -> Vec<Value> {
    let own = doc["node_id"].as_u64();
    let mut out = vec![serde_json::json!({
        "node_id": doc["node_id"],
        "rebuild": doc["rebuild"],
    })];
    let empty = Vec::new();
    for m in doc["members"].as_array().unwrap_or(&empty) {
        let id = m["node_id"].as_u64();
        if id.is_none() || id == own {
            continue;
        }
        if m["health"] == "unreachable" {
            out.push(serde_json::json!({"node_id": id, "error": "unreachable"}));
            continue;
        }
        let Some(addr) = m["http_addr"].as_str() else {
            continue;
        };
        let timeout = MEMBER_TIMEOUT.min(Duration::from_secs(args.timeout_s.max(1)));
        let answer = http_client::get(addr, "/v1/cluster", timeout)
            .map_err(|e| e.to_string())
            .and_then(|body| {
                serde_json::from_slice::<Value>(&body).map_err(|e| format!("not JSON: {e}"))
            });
        out.push(match answer {
            Ok(other) => serde_json::json!({"node_id": id, "rebuild": other["rebuild"]}),
            Err(e) => serde_json::json!({"node_id": id, "error": e}),
        });
    }
    out
}

/// "rebuilding: N partitions pending, X bytes remaining at R MB/s", or `None` for a node
/// that is not rebuilding.
pub fn rebuild_line(rebuild: &Value) -> Option<String> {
    let pending = rebuild["partitions_pending"].as_u64().unwrap_or(0);
    if pending == 0 {
        return None;
    }
    let remaining = rebuild["bytes_remaining"].as_u64().unwrap_or(0);
    let rate = rebuild["bytes_per_sec"].as_u64().unwrap_or(0);
    Some(format!(
        "rebuilding: {pending} partitions pending, {remaining} bytes remaining at {:.1} MB/s",
        rate as f64 / 1e6
    ))
}

pub fn cluster_status(args: ClusterStatusArgs) -> CliResult<u8> {
    let mut doc = fetch(&args.http, "/v1/cluster")?;
    let by_node = rebuild_by_node(&args.http, &doc);
    if args.common.json {
        doc["rebuild_by_node"] = Value::Array(by_node);
        return print(&[doc.to_string()]);
    }
    let empty = Vec::new();
    let mut lines = vec![format!(
        "node {} (controller leader: {})",
        cell(&doc["node_id"]),
        cell(&doc["controller_leader"])
    )];
    let members: Vec<Vec<String>> = doc["members"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|m| {
            vec![
                cell(&m["node_id"]),
                cell(&m["peer_addr"]),
                cell(&m["kafka_addr"]),
                cell(&m["http_addr"]),
                cell(&m["health"]),
            ]
        })
        .collect();
    lines.push(String::new());
    lines.extend(table(
        &["NODE", "PEER", "KAFKA", "HTTP", "HEALTH"],
        &members,
    ));
    let mut partitions = Vec::new();
    for t in doc["topics"].as_array().unwrap_or(&empty) {
        for p in t["partitions"].as_array().unwrap_or(&empty) {
            let replicas: Vec<String> = p["replicas"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|r| match r["lag"].as_u64() {
                    Some(lag) => format!("{}(lag {lag})", cell(&r["node_id"])),
                    None => cell(&r["node_id"]),
                })
                .collect();
            partitions.push(vec![
                cell(&t["name"]),
                cell(&p["partition"]),
                cell(&p["group"]),
                cell(&p["leader"]),
                cell(&p["term"]),
                cell(&p["commit"]),
                replicas.join(" "),
            ]);
        }
    }
    lines.push(String::new());
    if partitions.is_empty() {
        lines.push("no topics".into());
    } else {
        lines.extend(table(
            &[
                "TOPIC", "PART", "GROUP", "LEADER", "TERM", "COMMIT", "REPLICAS",
            ],
            &partitions,
        ));
        lines.push(
            "(lag is known for partitions this node leads; ask the leader's --http for the others)"
                .into(),
        );
    }
    lines.push(String::new());
    // Drawn after the text, on stderr, only on a terminal.
    let mut bars = Vec::new();
    for n in &by_node {
        let node = cell(&n["node_id"]);
        match (&n["rebuild"], n["error"].as_str()) {
            (_, Some(e)) => lines.push(format!("node {node}: rebuild unknown ({e})")),
            (r, None) => match rebuild_line(r) {
                Some(line) => {
                    lines.push(format!("node {node} {line}"));
                    let received = r["bytes_received"].as_u64().unwrap_or(0);
                    let remaining = r["bytes_remaining"].as_u64().unwrap_or(0);
                    bars.push((
                        received,
                        received.saturating_add(remaining),
                        format!("node {node} rebuild"),
                    ));
                }
                None => lines.push(format!("node {node}: not rebuilding")),
            },
        }
    }
    problems(&doc, &mut lines);
    let code = print(&lines)?;
    for (done, total, what) in bars {
        crate::progress::show_once(done, total, &what);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilding_node_gets_its_line_and_an_idle_one_none() {
        let r = serde_json::json!({
            "partitions_pending": 3,
            "bytes_remaining": 12_000_000u64,
            "bytes_per_sec": 4_200_000u64,
        });
        assert_eq!(
            rebuild_line(&r).as_deref(),
            Some("rebuilding: 3 partitions pending, 12000000 bytes remaining at 4.2 MB/s")
        );
        assert_eq!(
            rebuild_line(&serde_json::json!({"partitions_pending": 0})),
            None
        );
        assert_eq!(rebuild_line(&Value::Null), None);
    }
}
