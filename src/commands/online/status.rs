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

pub fn cluster_status(args: ClusterStatusArgs) -> CliResult<u8> {
    let doc = fetch(&args.http, "/v1/cluster")?;
    if args.common.json {
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
    problems(&doc, &mut lines);
    print(&lines)
}
