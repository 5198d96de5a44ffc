//! `tern cluster …`: operations on a running cluster's layout: `transfer-leader` (over
//! Kafka), `add-node` and `remove-node` (membership changes, over the admin HTTP endpoint
//! `/admin/members` of any node: src/node/http/members.rs; docs/operations/node.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::http_client::{self, HttpError};
use super::topics::print_json;
use super::{Out, ServerArgs};
use crate::error::{CliError, CliResult, EXIT_CLEAN};
use crate::Common;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Move the leadership of one partition to another of its replicas: the node becomes the
    /// partition's preferred leader, and the current leader hands over once it is caught up.
    /// Waits (up to --timeout-s) until the node leads.
    TransferLeader(TransferLeaderArgs),
    /// Add a node to the cluster: the controller registers it, it joins the controller
    /// group and the partitions placed on it as a learner and becomes a voter once caught
    /// up. Start the node (empty directory, the cluster's --cluster-id, --peers naming a
    /// member) before or after; it waits for this. Answers once the controller applied it.
    AddNode(AddNodeArgs),
    /// Remove a node from the cluster (LANCE §5.3, node replacement): its replicas move to
    /// the other members, and it leaves the controller's and every partition's
    /// configuration. Waits (up to --wait-s) until no group of the remaining members names
    /// it; only then may its directory be wiped and the node started again (it joins as a
    /// new learner).
    RemoveNode(RemoveNodeArgs),
}

/// Which node to ask: any member; the command goes to the controller's leader from there.
#[derive(Args, Debug, Clone)]
pub struct MemberTarget {
    /// Kafka address of any node (HOST:PORT); its HTTP address is asked from it over Kafka
    /// (DescribeConfigs of the broker, `tern.http.addr`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "http")]
    pub server: Option<String>,
    /// HTTP address of any node (its --http-addr, HOST:PORT). Default, when neither this
    /// nor --server is given: 127.0.0.1:9090.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Bound on each request, and on the retries while the controller elects a leader, in
    /// seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout_s: u64,
}

#[derive(Args, Debug)]
pub struct AddNodeArgs {
    /// The new node's id (its --node-id).
    #[arg(long)]
    pub id: u64,
    /// The new node's peer address (its --peer-addr, IP:PORT).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: String,
    /// Its Kafka address, if not on the peer address's host with the asked node's port (the
    /// node registers its own addresses once it runs, correcting a guess).
    #[arg(long, value_name = "IP:PORT")]
    pub kafka_addr: Option<String>,
    /// Its HTTP address, likewise.
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    #[command(flatten)]
    pub target: MemberTarget,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct RemoveNodeArgs {
    /// The id of the node to remove.
    #[arg(long)]
    pub id: u64,
    /// How long to wait until no Raft group of the remaining members names the node.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub wait_s: u64,
    /// Answer once the controller applied the removal, without waiting for the groups.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub target: MemberTarget,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub partition: i32,
    /// Node id of the replica to lead.
    #[arg(long)]
    pub to: i32,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

impl ClusterArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            ClusterCommand::TransferLeader(a) => a.common.json,
            ClusterCommand::AddNode(a) => a.common.json,
            ClusterCommand::RemoveNode(a) => a.common.json,
        }
    }
}

pub fn run(a: ClusterArgs) -> CliResult<u8> {
    match a.command {
        ClusterCommand::TransferLeader(a) => transfer_leader(a),
        ClusterCommand::AddNode(a) => add_node(a),
        ClusterCommand::RemoveNode(a) => remove_node(a),
    }
}

/// Pause between attempts while the controller has no leader or is not ready.
const RETRY_PAUSE: Duration = Duration::from_millis(300);
/// Redirects to the controller's leader followed for one command (a leader that changes
/// while we ask sends us on; more than this is an election storm, retried after a pause).
const REDIRECTS_MAX: usize = 3;

impl MemberTarget {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }

    /// The HTTP address of the node to ask first.
    fn http_addr(&self) -> CliResult<String> {
        if let Some(h) = &self.http {
            return Ok(h.clone());
        }
        let Some(server) = &self.server else {
            return Ok("127.0.0.1:9090".into());
        };
        let args = ServerArgs {
            server: server.clone(),
            timeout_s: self.timeout_s,
        };
        let mut client = args.connect()?;
        Ok(client.http_addr()?)
    }
}

/// Sends one membership command to the controller's leader (following the asked node's
/// redirect), retrying while no leader is known or it is not ready, bounded by the target's
/// timeout. The leader's answer (200) as JSON.
fn send_command(
    target: &MemberTarget,
    method: hyper::Method,
    path: &str,
    body: &Value,
) -> CliResult<Value> {
    let first = target.http_addr()?;
    let deadline = Instant::now() + target.timeout();
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let mut addr = first.clone();
    let mut redirects = 0;
    loop {
        let (status, answer) =
            http_client::request(&addr, method.clone(), path, body.clone(), target.timeout())?;
        let doc: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let refused = |status: u16| HttpError::Refused {
            addr: addr.clone(),
            path: path.to_string(),
            status,
            body: doc["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_string()),
        };
        match status {
            200 => return Ok(doc),
            421 => {
                if let (Some(leader), true) =
                    (doc["leader_http"].as_str(), redirects < REDIRECTS_MAX)
                {
                    addr = leader.to_string();
                    redirects += 1;
                    continue;
                }
            }
            503 => {}
            other => return Err(refused(other).into()),
        }
        if Instant::now() >= deadline {
            return Err(refused(status).into());
        }
        std::thread::sleep(RETRY_PAUSE);
        addr = first.clone();
        redirects = 0;
    }
}

fn groups_text(groups: &Value) -> Vec<String> {
    groups
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| match (g["topic"].as_str(), g["partition"].as_u64()) {
                    (Some(t), Some(p)) => format!("{t}-{p} (group {})", g["group"]),
                    _ => format!("group {}", g["group"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn add_node(a: AddNodeArgs) -> CliResult<u8> {
    let mut body = json!({"node_id": a.id, "peer_addr": a.addr});
    if let Some(k) = &a.kafka_addr {
        body["kafka_addr"] = json!(k);
    }
    if let Some(h) = &a.http_addr {
        body["http_addr"] = json!(h);
    }
    let doc = send_command(&a.target, hyper::Method::POST, "/admin/members", &body)?;
    if a.common.json {
        return print_json(&doc);
    }
    let m = &doc["member"];
    let mut out = Out::new();
    let verb = if doc["outcome"] == "updated" {
        "was a member already; its addresses are now"
    } else {
        "added:"
    };
    out.line(&format!(
        "node {} {verb} peer {}, kafka {}, http {}",
        a.id,
        m["peer_addr"].as_str().unwrap_or("-"),
        m["kafka_addr"].as_str().unwrap_or("-"),
        m["http_addr"].as_str().unwrap_or("-"),
    ))?;
    let placed = groups_text(&doc["replicas_added"]);
    if !placed.is_empty() {
        out.line(&format!("replicas placed on it: {}", placed.join(", ")))?;
    }
    out.line("it joins the controller and those partitions as a learner and becomes a voter once caught up (tern cluster-status, tern raft-info)")?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}

/// What still names `node` on the remaining members: `(member, why)` per member that does,
/// or cannot be asked.
fn still_named(
    members: &BTreeMap<u64, String>,
    node: u64,
    timeout: Duration,
) -> Vec<(u64, String)> {
    let mut left = Vec::new();
    for (&id, http) in members {
        let doc = match http_client::get(http, "/v1/raft", timeout)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => {
                left.push((id, format!("cannot ask it: {e}")));
                continue;
            }
        };
        let names = |g: &Value, key: &str| {
            g[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n.as_u64() == Some(node)))
        };
        for g in doc["groups"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let named = names(g, "voters") || names(g, "voters_outgoing") || names(g, "learners");
            if named || g["conf_committed"] == json!(false) {
                left.push((
                    id,
                    format!(
                        "group {} ({}) {}",
                        g["group"],
                        g["topic"].as_str().unwrap_or("controller"),
                        if named {
                            "still names it"
                        } else {
                            "has a configuration change in flight"
                        }
                    ),
                ));
            }
        }
    }
    left
}

fn remove_node(a: RemoveNodeArgs) -> CliResult<u8> {
    let doc = send_command(
        &a.target,
        hyper::Method::DELETE,
        &format!("/admin/members/{}", a.id),
        &Value::Null,
    )?;
    let orphaned = groups_text(&doc["orphaned"]);
    let mut waited = json!(null);
    if !a.no_wait {
        // The remaining members, from the controller state of the node that answered.
        let leader_http = a.target.http_addr()?;
        let cluster: Value = serde_json::from_slice(&http_client::get(
            &leader_http,
            "/v1/cluster",
            a.target.timeout(),
        )?)
        .map_err(|e| CliError::Usage(format!("{leader_http}/v1/cluster is not JSON: {e}")))?;
        let members: BTreeMap<u64, String> = cluster["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|m| Some((m["node_id"].as_u64()?, m["http_addr"].as_str()?.to_string())))
            .filter(|(id, _)| *id != a.id)
            .collect();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(a.wait_s);
        loop {
            let left = still_named(&members, a.id, a.target.timeout());
            if left.is_empty() {
                waited = json!(started.elapsed().as_millis() as u64);
                break;
            }
            if Instant::now() >= deadline {
                let what: Vec<String> = left
                    .iter()
                    .map(|(m, why)| format!("node {m}: {why}"))
                    .collect();
                return Err(HttpError::Incomplete {
                    what: format!(
                        "node {} was removed from the controller's members, but after {} s {}; do not wipe it yet, run the command again to wait more",
                        a.id,
                        a.wait_s,
                        what.join("; ")
                    ),
                }
                .into());
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
    if a.common.json {
        let mut doc = doc;
        doc["groups_left_ms"] = waited;
        return print_json(&doc);
    }
    let mut out = Out::new();
    out.line(&format!("node {} removed from the cluster's members", a.id))?;
    let moved = groups_text(&doc["replicas_dropped"]);
    if !moved.is_empty() {
        out.line(&format!("its replicas left: {}", moved.join(", ")))?;
    }
    let placed: Vec<String> = doc["replicas_added"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .zip(groups_text(&doc["replicas_added"]))
        .map(|(r, g)| format!("{g} on node {}", r["node_id"]))
        .collect();
    if !placed.is_empty() {
        out.line(&format!("new replicas: {}", placed.join(", ")))?;
    }
    if !orphaned.is_empty() {
        out.line(&format!(
            "ORPHANED (node {} held their only replica; their records are gone, they restart empty): {}",
            a.id,
            orphaned.join(", ")
        ))?;
    }
    if !a.no_wait {
        out.line(&format!(
            "no Raft group of the remaining members names node {} any more: its directory may be wiped",
            a.id
        ))?;
    }
    out.flush()?;
    Ok(EXIT_CLEAN)
}

fn transfer_leader(a: TransferLeaderArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    client.transfer_leader(&a.topic, a.partition, a.to)?;
    if a.common.json {
        return print_json(&serde_json::json!({
            "topic": a.topic,
            "partition": a.partition,
            "leader": a.to,
        }));
    }
    let mut out = Out::new();
    out.line(&format!(
        "node {} leads {} partition {}",
        a.to, a.topic, a.partition
    ))?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}
