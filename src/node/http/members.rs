//! `POST /admin/members` and `DELETE /admin/members/N`: membership changes (`tern cluster
//! add-node` / `remove-node`). Kafka has no request tern uses for this, so the operator's
//! command comes over the admin HTTP endpoint of any node: the node hands the controller
//! command (`AddMember` / `RemoveMember`) to its controller shard; the controller's leader
//! proposes it and answers once it is applied. Another node answers 421 with the leader to
//! ask (its id and HTTP address, from the controller state), and the CLI asks it.
//!
//! What happens after the command commits is the controller's and the groups' work
//! (docs/operations/node.md, "Membership changes"): the controller group adds a new member as
//! a learner and promotes it once caught up, or takes a removed one out of its
//! configuration; each partition's leader moves its replicas the same way
//! (`replica_moves.rs`). The answer does not wait for that: `tern cluster remove-node`
//! waits for it by reading `/v1/raft` of the remaining members.
//!
//! Request body of POST (JSON, at most `HTTP_BODY_BYTES_MAX`; docs/format.md):
//! `{"node_id": N, "peer_addr": "IP:PORT", "kafka_addr": "IP:PORT"?, "http_addr": "IP:PORT"?}`.
//! A missing Kafka or HTTP address is taken to be on the peer address's host with this
//! node's ports (as for the initial voters, `runtime::initial_members`); the new node
//! registers its own addresses once it runs (node reports), so the guess does not last.

use std::net::SocketAddr;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::future;
use futures_util::SinkExt;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::routes::{json_response, Body};
use super::{status, HttpSetup, HTTP_BODY_BYTES_MAX};
use crate::node::controller::{
    Command, ControllerState, Member, Outcome, ReplicaAdded, CONTROLLER_GROUP,
};
use crate::node::requests::RequestError;
use crate::node::shard::ShardMsg;

/// How long a handler waits for the controller to apply the command: inside the connection's
/// own bound (`HTTP_CONNECTION_TIME_MAX`, 10 s), so the client gets an answer, not a cut.
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(8);

/// The body of `POST /admin/members`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    node_id: u64,
    peer_addr: String,
    kafka_addr: Option<String>,
    http_addr: Option<String>,
}

fn bad_request(why: String) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": why }))
}

fn parse_addr(what: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{what} {text:?} is not IP:PORT: {e}"))
}

/// `POST /admin/members`.
pub async fn add(setup: &HttpSetup, req: Request<Incoming>) -> Response<Body> {
    let bytes = match Limited::new(req.into_body(), HTTP_BODY_BYTES_MAX as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(format!("reading the request body: {e}")),
    };
    let body: AddBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return bad_request(format!(
                "the body must be {{\"node_id\": N, \"peer_addr\": \"IP:PORT\", \"kafka_addr\"?: \"IP:PORT\", \"http_addr\"?: \"IP:PORT\"}}: {e}"
            ))
        }
    };
    let member = match member_of(setup, &body) {
        Ok(m) => m,
        Err(why) => return bad_request(why),
    };
    let view = member_json(&member);
    run(setup, Command::AddMember(member), view).await
}

fn member_of(setup: &HttpSetup, body: &AddBody) -> Result<Member, String> {
    if body.node_id == 0 {
        return Err("node_id 0 is reserved".into());
    }
    let peer_addr = parse_addr("peer_addr", &body.peer_addr)?;
    let on_peer_host = |mut own: SocketAddr| {
        own.set_ip(peer_addr.ip());
        own
    };
    let kafka_addr = match &body.kafka_addr {
        Some(a) => parse_addr("kafka_addr", a)?,
        None => on_peer_host(setup.kafka_addr),
    };
    let http_addr = match &body.http_addr {
        Some(a) => parse_addr("http_addr", a)?,
        None => on_peer_host(setup.addr),
    };
    Ok(Member {
        node_id: body.node_id,
        peer_addr,
        kafka_addr,
        http_addr,
    })
}

fn member_json(m: &Member) -> Value {
    json!({
        "node_id": m.node_id,
        "peer_addr": m.peer_addr.to_string(),
        "kafka_addr": m.kafka_addr.to_string(),
        "http_addr": m.http_addr.to_string(),
    })
}

/// `DELETE /admin/members/N` (`tail` is what follows `/admin/members/`).
pub async fn remove(setup: &HttpSetup, tail: &str) -> Response<Body> {
    let node_id = match tail.parse::<u64>() {
        Ok(n) if n != 0 => n,
        _ => return bad_request(format!("{tail:?} is not a node id (1 or more)")),
    };
    run(
        setup,
        Command::RemoveMember { node_id },
        json!({ "node_id": node_id }),
    )
    .await
}

/// Hands `command` to the controller shard and answers with what applying it did.
async fn run(setup: &HttpSetup, command: Command, member: Value) -> Response<Body> {
    let shard = tern_engine::shard_for_group(CONTROLLER_GROUP, setup.senders.len() as u32);
    let Some(sender) = setup.senders.get(shard as usize) else {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "no controller shard"}),
        );
    };
    let (tx, rx) = oneshot::channel();
    let mut sender = sender.clone();
    let asked = async {
        sender
            .send(ShardMsg::Controller { command, reply: tx })
            .await
            .map_err(|_| "the controller shard stopped".to_string())?;
        rx.await
            .map_err(|_| "the controller shard stopped".to_string())
    };
    let late = async {
        glommio::timer::sleep(COMMAND_WAIT_MAX).await;
        Err(format!(
            "the controller did not apply the command within {} s (it may still: check `tern cluster-status`)",
            COMMAND_WAIT_MAX.as_secs()
        ))
    };
    let answer = match future::or(asked, late).await {
        Ok(a) => a,
        Err(why) => {
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": why }))
        }
    };
    let state = status::controller_view(&setup.senders)
        .await
        .ok()
        .and_then(|v| v.controller);
    match answer {
        Ok(outcome) => outcome_response(setup.node_id, outcome, member, state.as_deref()),
        Err(RequestError::NotLeader { leader }) => {
            let leader_http = state
                .as_deref()
                .and_then(|s| s.members().get(&leader))
                .map(|m| m.http_addr.to_string());
            json_response(
                StatusCode::MISDIRECTED_REQUEST,
                &json!({
                    "error": if leader == 0 {
                        format!("node {} does not lead the controller and knows no leader yet; retry", setup.node_id)
                    } else {
                        format!("node {} does not lead the controller; node {leader} does", setup.node_id)
                    },
                    "leader": (leader != 0).then_some(leader),
                    "leader_http": leader_http,
                }),
            )
        }
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": e.to_string() }),
        ),
    }
}

/// Topic and partition of each group, as the controller state names them.
fn groups_json(state: Option<&ControllerState>, groups: &[u64]) -> Vec<Value> {
    groups
        .iter()
        .map(|&g| {
            let found = state.and_then(|s| {
                s.topics().values().find_map(|t| {
                    t.partitions
                        .iter()
                        .position(|p| p.group == g)
                        .map(|i| (t.name.clone(), i))
                })
            });
            json!({
                "group": g,
                "topic": found.as_ref().map(|f| f.0.clone()),
                "partition": found.map(|f| f.1),
            })
        })
        .collect()
}

fn added_json(state: Option<&ControllerState>, added: &[ReplicaAdded]) -> Vec<Value> {
    added
        .iter()
        .zip(groups_json(
            state,
            &added.iter().map(|a| a.group).collect::<Vec<_>>(),
        ))
        .map(|(a, mut g)| {
            g["node_id"] = json!(a.node);
            g
        })
        .collect()
}

fn outcome_response(
    node_id: u64,
    outcome: Outcome,
    member: Value,
    state: Option<&ControllerState>,
) -> Response<Body> {
    let body = match outcome {
        Outcome::MemberAdded { added, .. } => json!({
            "answered_by": node_id,
            "outcome": "added",
            "member": member,
            "replicas_added": added_json(state, &added),
        }),
        Outcome::MemberUpdated { .. } => json!({
            "answered_by": node_id,
            "outcome": "updated",
            "member": member,
            "replicas_added": [],
        }),
        Outcome::MemberRemoved {
            dropped,
            orphaned,
            added,
            ..
        } => json!({
            "answered_by": node_id,
            "outcome": "removed",
            "member": member,
            "replicas_dropped": groups_json(state, &dropped),
            "orphaned": groups_json(state, &orphaned),
            "replicas_added": added_json(state, &added),
        }),
        Outcome::Rejected(r) => {
            return json_response(
                StatusCode::CONFLICT,
                &json!({"error": r.to_string(), "answered_by": node_id}),
            )
        }
        other => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("unexpected outcome {other:?}")}),
            )
        }
    };
    json_response(StatusCode::OK, &body)
}
