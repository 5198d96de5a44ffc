//! Method and path to handler. Every answer is JSON except `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{metrics, status, HttpSetup, HTTP_BODY_BYTES_MAX};
use crate::node::compaction::CompactionOutcome;
use crate::node::shard::ShardMsg;

pub type Body = Full<Bytes>;

pub async fn route(
    setup: Rc<HttpSetup>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(len) = declared_length(&req) {
        if len > HTTP_BODY_BYTES_MAX {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": format!("request body of {len} bytes; at most {HTTP_BODY_BYTES_MAX}")}),
            ));
        }
    }
    let path = req.uri().path().to_string();
    if path == "/admin/members" || path.starts_with("/admin/members/") {
        return Ok(members_route(&setup, req, &path).await);
    }
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => health(&setup).await,
        (&Method::GET, "/ready") => ready(&setup).await,
        (&Method::GET, "/metrics") => metrics_text(&setup).await,
        (&Method::GET, "/v1/raft") => {
            let shards = status::all_status(&setup.senders).await;
            json_response(StatusCode::OK, &status::raft_json(setup.node_id, &shards))
        }
        (&Method::GET, "/v1/cluster") => {
            let view = status::controller_view(&setup.senders).await.ok();
            let shards = status::all_status(&setup.senders).await;
            json_response(
                StatusCode::OK,
                &status::cluster_json(setup.node_id, view.as_ref(), &shards),
            )
        }
        (&Method::POST, "/admin/snapshot") => admin_snapshot(&setup, req.uri().query()).await,
        (_, "/admin/snapshot") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{} is not allowed here; use POST", req.method())}),
        ),
        (_, "/health" | "/ready" | "/metrics" | "/v1/raft" | "/v1/cluster") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{} is not allowed here; use GET", req.method())}),
        ),
        (_, path) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no endpoint {path}"),
                    "endpoints": ["/health", "/ready", "/metrics", "/v1/raft", "/v1/cluster",
                                  "POST /admin/snapshot", "POST /admin/members",
                                  "DELETE /admin/members/N"]}),
        ),
    };
    Ok(response)
}

/// `POST /admin/members` and `DELETE /admin/members/N` (`members.rs`).
async fn members_route(setup: &HttpSetup, req: Request<Incoming>, path: &str) -> Response<Body> {
    match (req.method().clone(), path.strip_prefix("/admin/members/")) {
        (Method::POST, None) => super::members::add(setup, req).await,
        (Method::DELETE, Some(tail)) => super::members::remove(setup, tail).await,
        (method, None) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{method} is not allowed here; use POST (add a member)")}),
        ),
        (method, Some(_)) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{method} is not allowed here; use DELETE (remove a member)")}),
        ),
    }
}

/// `POST /admin/snapshot[?topic=T&partition=P]`: every group on this node (or the one
/// replica of T-P hosted here) compacts its log up to its applied index now. Answers what
/// each group did ([`CompactionOutcome`]); 404 when the partition has no replica here.
async fn admin_snapshot(setup: &HttpSetup, query: Option<&str>) -> Response<Body> {
    let target = match snapshot_target(query) {
        Ok(t) => t,
        Err(why) => return json_response(StatusCode::BAD_REQUEST, &json!({ "error": why })),
    };
    let asks: Vec<(usize, Option<u64>)> = match target {
        None => (0..setup.senders.len()).map(|s| (s, None)).collect(),
        Some((topic, partition)) => {
            let shards = status::all_status(&setup.senders).await;
            let group = shards.iter().flatten().flat_map(|s| &s.groups).find(|g| {
                g.topic.as_deref() == Some(topic.as_str()) && g.partition == Some(partition)
            });
            let Some(group) = group else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no replica of {topic}-{partition} on node {}", setup.node_id)}),
                );
            };
            let shard = tern_engine::shard_for_group(group.group, setup.senders.len() as u32);
            vec![(shard as usize, Some(group.group))]
        }
    };
    let answers = futures_util::future::join_all(asks.iter().map(|&(shard, group)| {
        status::ask(&setup.senders[shard], move |reply| ShardMsg::Snapshot {
            group,
            reply,
        })
    }))
    .await;
    let mut groups: Vec<CompactionOutcome> = Vec::new();
    let mut errors = Vec::new();
    for ((shard, _), answer) in asks.iter().zip(answers) {
        match answer {
            Ok(outcomes) => groups.extend(outcomes),
            Err(e) => errors.push(format!("shard {shard}: {e}")),
        }
    }
    let code = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        code,
        &json!({"node_id": setup.node_id, "groups": groups, "errors": errors}),
    )
}

/// `topic=T&partition=P` (both or neither).
fn snapshot_target(query: Option<&str>) -> Result<Option<(String, u32)>, String> {
    let (mut topic, mut partition) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("topic", t)) if !t.is_empty() => topic = Some(t.to_string()),
            Some(("partition", p)) => {
                partition = Some(
                    p.parse::<u32>()
                        .map_err(|_| format!("partition {p:?} is not a partition number"))?,
                )
            }
            _ => return Err(format!("unknown parameter {pair:?} (topic=T&partition=P)")),
        }
    }
    match (topic, partition) {
        (Some(t), Some(p)) => Ok(Some((t, p))),
        (None, None) => Ok(None),
        _ => Err("give both topic and partition, or neither (every group)".into()),
    }
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// 200 when every shard answers and none has failed; 503 with the reasons otherwise.
async fn health(setup: &HttpSetup) -> Response<Body> {
    let shards = status::all_status(&setup.senders).await;
    let problems = status::health_problems(&shards);
    if problems.is_empty() {
        json_response(
            StatusCode::OK,
            &json!({"status": "ok", "node_id": setup.node_id, "shards": shards.len()}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "failed", "node_id": setup.node_id, "reasons": problems}),
        )
    }
}

/// 200 once recovery finished and every local replica caught up to its leader's commit as
/// last heard; 503 with what is pending otherwise.
async fn ready(setup: &HttpSetup) -> Response<Body> {
    let shards = status::all_status(&setup.senders).await;
    let pending = status::ready_pending(&setup.progress, &shards);
    if pending.is_empty() {
        json_response(
            StatusCode::OK,
            &json!({"status": "ready", "node_id": setup.node_id}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "pending", "node_id": setup.node_id, "pending": pending}),
        )
    }
}

async fn metrics_text(setup: &HttpSetup) -> Response<Body> {
    match metrics::scrape(setup).await {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("metrics encoding failed: {e}")}),
        ),
    }
}

pub fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut text = body.to_string();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
