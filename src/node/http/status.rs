//! What `/health`, `/ready`, `/v1/raft` and `/v1/cluster` answer, computed from copies the
//! shards send back ([`ShardMsg::Status`], [`ShardMsg::View`]). One rule each for health and
//! readiness, used by the endpoints, by `/metrics` and by the final `caught_up` log line.

use std::collections::BTreeMap;

use futures_channel::{mpsc, oneshot};
use futures_lite::future;
use futures_util::SinkExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::{NodeProgress, SHARD_ANSWER_TIMEOUT};
use crate::node::controller::CONTROLLER_GROUP;
use crate::node::shard::{GroupStatus, ShardMsg, ShardRecovery, ShardStatus, ShardView};

/// Sends one question to a shard and waits (bounded) for the answer.
pub async fn ask<T>(
    sender: &mpsc::Sender<ShardMsg>,
    make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    let mut sender = sender.clone();
    let asked = async {
        sender
            .send(make(tx))
            .await
            .map_err(|_| "stopped".to_string())?;
        rx.await.map_err(|_| "stopped".to_string())
    };
    let late = async {
        glommio::timer::sleep(SHARD_ANSWER_TIMEOUT).await;
        Err(format!(
            "did not answer within {} ms",
            SHARD_ANSWER_TIMEOUT.as_millis()
        ))
    };
    future::or(asked, late).await
}

/// Every shard's status (asked at once), in shard order.
pub async fn all_status(senders: &[mpsc::Sender<ShardMsg>]) -> Vec<Result<ShardStatus, String>> {
    futures_util::future::join_all(
        senders
            .iter()
            .map(|s| ask(s, |reply| ShardMsg::Status { reply })),
    )
    .await
}

/// The controller state as the shard hosting the controller group knows it (every shard
/// keeps a copy; any answers).
pub async fn controller_view(senders: &[mpsc::Sender<ShardMsg>]) -> Result<ShardView, String> {
    let shard = tern_engine::shard_for_group(CONTROLLER_GROUP, senders.len() as u32) as usize;
    match senders.get(shard) {
        Some(s) => ask(s, |reply| ShardMsg::View { reply }).await,
        None => Err("no shard".into()),
    }
}

/// Why the node is not healthy (empty: healthy): a shard failed (fail-stop after a write or
/// fsync error), or does not answer.
pub fn health_problems(shards: &[Result<ShardStatus, String>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        match s {
            Ok(s) => {
                if let Some(why) = &s.failed {
                    out.push(format!("shard {}: failed: {why}", s.shard));
                }
            }
            Err(e) => out.push(format!("shard {i}: {e}")),
        }
    }
    out
}

/// A group is caught up when it knows a leader and has applied everything that leader had
/// committed when this replica last heard from it.
pub fn group_pending(g: &GroupStatus) -> Option<String> {
    if let Some(why) = &g.halted {
        return Some(format!("halted: {why}"));
    }
    if g.leader == 0 {
        return Some("no leader known".into());
    }
    if g.rebuilding {
        return Some(format!(
            "rebuilding (votes for nobody): applied {} of the leader's commit {}",
            g.applied, g.leader_commit
        ));
    }
    // Every leader commits an entry of its own at once, so a replica that heard of nothing
    // committed has not received its leader's log yet (a new replica: heartbeats tell it at
    // most what the leader knows it holds, which is nothing).
    if g.leader_commit == 0 {
        return Some("the leader has sent nothing committed yet (a new replica)".into());
    }
    if g.applied < g.leader_commit {
        return Some(format!(
            "applied {} of the leader's commit {}",
            g.applied, g.leader_commit
        ));
    }
    None
}

/// What keeps the node from being ready (empty: ready): recovery not finished, a shard
/// unhealthy, or a local replica not caught up to its leader's commit.
pub fn ready_pending(
    progress: &NodeProgress,
    shards: &[Result<ShardStatus, String>],
) -> Vec<Value> {
    let mut out = Vec::new();
    if progress.shards_replayed() < progress.shards {
        out.push(json!({
            "what": "recovery",
            "detail": format!("{} of {} shards replayed their WAL",
                progress.shards_replayed(), progress.shards),
        }));
    }
    for p in health_problems(shards) {
        out.push(json!({"what": "shard", "detail": p}));
    }
    for s in shards.iter().flatten() {
        for g in &s.groups {
            if let Some(why) = group_pending(g) {
                out.push(json!({
                    "what": "group",
                    "group": g.group,
                    "topic": g.topic,
                    "partition": g.partition,
                    "detail": why,
                }));
            }
        }
    }
    out
}

/// One group as `/v1/raft` lists it: its shard and its status.
#[derive(Serialize)]
struct RaftGroup<'a> {
    shard: u32,
    #[serde(flatten)]
    status: &'a GroupStatus,
}

/// `/v1/raft`: every local replica's Raft state.
pub fn raft_json(node_id: u64, shards: &[Result<ShardStatus, String>]) -> Value {
    let mut groups: Vec<RaftGroup> = shards
        .iter()
        .flatten()
        .flat_map(|s| {
            s.groups.iter().map(|g| RaftGroup {
                shard: s.shard,
                status: g,
            })
        })
        .collect();
    groups.sort_by_key(|g| g.status.group);
    json!({
        "node_id": node_id,
        "groups": groups,
        "problems": health_problems(shards),
    })
}

/// `/v1/cluster`: members and their addresses, topics and who leads each partition, each
/// replica's lag as far as this node knows (it knows the progress of the groups it leads),
/// and each member's health as seen from here.
pub fn cluster_json(
    node_id: u64,
    view: Option<&ShardView>,
    shards: &[Result<ShardStatus, String>],
) -> Value {
    let local: BTreeMap<u64, &GroupStatus> = shards
        .iter()
        .flatten()
        .flat_map(|s| s.groups.iter().map(|g| (g.group, g)))
        .collect();
    let controller = view.and_then(|v| v.controller.as_deref());
    let own_problems = health_problems(shards);
    let mut members = Vec::new();
    if let Some(state) = controller {
        for (&id, m) in state.members() {
            let health = if id == node_id {
                if own_problems.is_empty() {
                    "ok"
                } else {
                    "failed"
                }
            } else {
                peer_health(id, &local)
            };
            members.push(json!({
                "node_id": id,
                "peer_addr": m.peer_addr.to_string(),
                "kafka_addr": m.kafka_addr.to_string(),
                "http_addr": m.http_addr.to_string(),
                "health": health,
            }));
        }
    }
    let mut topics = Vec::new();
    if let Some(state) = controller {
        for t in state.topics().values() {
            let partitions: Vec<Value> = t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let here = local.get(&p.group);
                    let replicas: Vec<Value> = p
                        .replicas
                        .iter()
                        .map(|&n| {
                            let progress = here.and_then(|g| {
                                if g.role != "leader" {
                                    return None;
                                }
                                if n == node_id {
                                    return Some((g.last_index, 0));
                                }
                                g.replicas
                                    .iter()
                                    .find(|r| r.node == n)
                                    .map(|r| (r.match_index, r.lag))
                            });
                            json!({
                                "node_id": n,
                                "match_index": progress.map(|p| p.0),
                                "lag": progress.map(|p| p.1),
                            })
                        })
                        .collect();
                    json!({
                        "partition": i,
                        "group": p.group,
                        "leader": here.map(|g| g.leader).filter(|&l| l != 0),
                        "term": here.map(|g| g.term),
                        "commit": here.map(|g| g.commit),
                        "rebuilding": here.map(|g| g.rebuilding),
                        "replicas": replicas,
                    })
                })
                .collect();
            topics.push(json!({
                "name": t.name,
                "id": t.id.to_string(),
                "replication_factor": t.replication_factor,
                "partitions": partitions,
            }));
        }
    }
    let controller_leader = local
        .get(&CONTROLLER_GROUP)
        .map(|g| g.leader)
        .filter(|&l| l != 0);
    let rebuild = rebuild_progress(shards.iter().flatten().flat_map(|s| &s.groups));
    let recovery = recovery_totals(shards.iter().flatten());
    json!({
        "node_id": node_id,
        "rebuild": {
            "partitions_pending": rebuild.groups_pending,
            "entries_remaining": rebuild.entries_remaining,
            "bytes_remaining": rebuild.bytes_remaining,
            "bytes_received": recovery.bytes_in_total,
            "bytes_sent": recovery.bytes_out_total,
            "bytes_per_sec": recovery.bytes_last_sec,
            "transfers_active": recovery.transfers_active,
        },
        "controller_leader": controller_leader,
        "controller_known": controller.is_some(),
        "members": members,
        "topics": topics,
        "problems": own_problems,
    })
}

/// How far this node's rebuild has to go (docs/replication.md): its groups still rebuilding
/// (the controller included) and the committed entries they have yet to apply, as far as
/// each heard its leader's commit. Both 0 on a node that is not rebuilding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildProgress {
    pub groups_pending: u64,
    pub entries_remaining: u64,
    /// Estimated (`GroupStatus::recovery_bytes_remaining`).
    pub bytes_remaining: u64,
}

pub fn rebuild_progress<'a>(groups: impl IntoIterator<Item = &'a GroupStatus>) -> RebuildProgress {
    let mut p = RebuildProgress::default();
    for g in groups {
        if g.rebuilding {
            p.groups_pending += 1;
            p.entries_remaining += g.leader_commit.saturating_sub(g.applied);
            p.bytes_remaining += g.recovery_bytes_remaining;
        }
    }
    p
}

/// The shards' catch-up counters added up.
pub fn recovery_totals<'a>(shards: impl IntoIterator<Item = &'a ShardStatus>) -> ShardRecovery {
    shards
        .into_iter()
        .fold(ShardRecovery::default(), |a, s| ShardRecovery {
            bytes_in_total: a.bytes_in_total + s.recovery.bytes_in_total,
            bytes_out_total: a.bytes_out_total + s.recovery.bytes_out_total,
            bytes_last_sec: a.bytes_last_sec + s.recovery.bytes_last_sec,
            transfers_active: a.transfers_active + s.recovery.transfers_active,
        })
}

/// A peer's health as far as this node can tell: `reachable` when it leads a group this node
/// replicates (its heartbeats arrive) or answers in a group this node leads; `unreachable`
/// when it is silent in a group this node leads; `unknown` otherwise.
fn peer_health(peer: u64, local: &BTreeMap<u64, &GroupStatus>) -> &'static str {
    let mut silent = false;
    for g in local.values() {
        if g.leader == peer {
            return "reachable";
        }
        if let Some(r) = g.replicas.iter().find(|r| r.node == peer) {
            if r.active {
                return "reachable";
            }
            silent = true;
        }
    }
    if silent {
        "unreachable"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(group: u64, leader: u64, applied: u64, leader_commit: u64) -> GroupStatus {
        GroupStatus {
            group,
            topic: Some("t".into()),
            partition: Some(0),
            role: "follower".into(),
            term: 3,
            vote: 0,
            leader,
            commit: applied,
            leader_commit,
            applied,
            first_index: 1,
            last_index: applied,
            voters: vec![1, 2, 3],
            voters_outgoing: vec![],
            learners: vec![],
            conf_committed: true,
            replicas: vec![],
            halted: None,
            entries_read_at_start: None,
            rebuilding: false,
            recovery_bytes_remaining: 0,
            quiet: false,
        }
    }

    fn shard(shard: u32, failed: Option<&str>, groups: Vec<GroupStatus>) -> ShardStatus {
        ShardStatus {
            shard,
            failed: failed.map(str::to_string),
            groups,
            recovery: ShardRecovery::default(),
        }
    }

    #[test]
    fn rebuilding_groups_are_pending_and_counted() {
        let mut a = group(1, 2, 10, 50);
        a.rebuilding = true;
        let mut b = group(2, 2, 7, 7);
        b.rebuilding = true;
        let c = group(3, 2, 5, 9);
        assert!(group_pending(&b).is_some_and(|w| w.contains("rebuilding")));
        let shards: Vec<Result<ShardStatus, String>> =
            vec![Ok(shard(0, None, vec![a, b, c])), Err("silent".into())];
        assert_eq!(
            rebuild_progress(shards.iter().flatten().flat_map(|s| &s.groups)),
            RebuildProgress {
                groups_pending: 2,
                entries_remaining: 40,
                bytes_remaining: 0,
            }
        );
    }

    #[test]
    fn health_is_red_for_a_failed_or_silent_shard() {
        let ok = vec![Ok(shard(0, None, vec![])), Ok(shard(1, None, vec![]))];
        assert!(health_problems(&ok).is_empty());
        let failed = vec![
            Ok(shard(0, None, vec![])),
            Ok(shard(1, Some("fsync failed: EIO"), vec![])),
        ];
        let p = health_problems(&failed);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("shard 1") && p[0].contains("EIO"), "{p:?}");
        let silent = vec![Err("did not answer within 1000 ms".to_string())];
        assert!(health_problems(&silent)[0].contains("shard 0"));
    }

    #[test]
    fn ready_waits_for_replay_a_leader_and_the_leaders_commit() {
        let progress = NodeProgress::new(2);
        let caught_up = vec![Ok(shard(0, None, vec![group(1, 2, 10, 10)]))];
        // One of two shards replayed: pending recovery.
        progress.shard_replayed();
        let p = ready_pending(&progress, &caught_up);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0]["what"], "recovery");
        assert!(progress.shard_replayed(), "the second shard is the last");
        assert!(ready_pending(&progress, &caught_up).is_empty());

        let behind = vec![Ok(shard(0, None, vec![group(1, 2, 7, 10)]))];
        let p = ready_pending(&progress, &behind);
        assert_eq!(p[0]["group"], 1);
        assert!(
            p[0]["detail"].as_str().unwrap().contains("applied 7"),
            "{p:?}"
        );
        let leaderless = vec![Ok(shard(0, None, vec![group(1, 0, 10, 10)]))];
        assert_eq!(
            ready_pending(&progress, &leaderless)[0]["detail"],
            "no leader known"
        );
        let failed = vec![Ok(shard(0, Some("write failed"), vec![]))];
        assert_eq!(ready_pending(&progress, &failed)[0]["what"], "shard");
    }

    #[test]
    fn peer_health_from_leadership_and_progress() {
        let mut led = group(1, 1, 5, 5);
        led.role = "leader".into();
        led.replicas = vec![
            crate::node::shard::ReplicaProgress {
                node: 2,
                match_index: 5,
                lag: 0,
                active: true,
            },
            crate::node::shard::ReplicaProgress {
                node: 3,
                match_index: 1,
                lag: 4,
                active: false,
            },
        ];
        let local: BTreeMap<u64, &GroupStatus> = [(1, &led)].into_iter().collect();
        assert_eq!(peer_health(2, &local), "reachable");
        assert_eq!(peer_health(3, &local), "unreachable");
        assert_eq!(peer_health(4, &local), "unknown");
    }
}
