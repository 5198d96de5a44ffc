//! Health and readiness when a shard fails: a shard on the simulated disk (the engine's
//! `SimStorage`, its fault injection) whose fdatasync starts failing stops (fail-stop), and
//! the rules `/health` and `/ready` answer with turn red for it, naming the shard.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use glommio::LocalExecutorBuilder;
use tern_engine::storage::sim::{FaultOp, SimStorage};
use tern_engine::{ShardWal, WalConfig};

use super::status::{all_status, health_problems, ready_pending};
use super::NodeProgress;
use crate::node::controller::{Command, Member, Retention, TopicSpec};
use crate::node::requests::RequestError;
use crate::node::runtime::NodeTransport;
use crate::node::shard::{Shard, ShardMsg, ShardSetup};

/// Bounds the waits below (elections, the failed write), in 10 ms steps.
const STEPS_MAX: u32 = 2000;

#[test]
fn health_and_ready_turn_red_when_a_shards_fsync_fails() {
    LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(|| async move {
            let disk = SimStorage::new();
            let wal = ShardWal::open(
                disk.clone(),
                0,
                std::path::Path::new("/data/shard-0"),
                std::path::Path::new("/data/quarantine"),
                WalConfig {
                    segment_bytes: 1 << 20,
                    batch_bytes_max: 256 << 10,
                    ..WalConfig::default()
                },
            )
            .await
            .expect("WAL opens on the simulated disk");
            let wal = Rc::new(wal);
            let (tx, rx) = mpsc::channel(64);
            let setup = ShardSetup {
                node_id: 1,
                shard: 0,
                shards: 1,
                tick: Duration::from_millis(10),
                external_ticks: None,
                controller_voters: vec![1],
                initial_members: vec![Member {
                    node_id: 1,
                    peer_addr: "127.0.0.1:19093".parse().unwrap(),
                    kafka_addr: "127.0.0.1:19092".parse().unwrap(),
                    http_addr: "127.0.0.1:19090".parse().unwrap(),
                }],
                raft: tern_raft::Config::new(1),
                inbox: rx,
                shard_senders: vec![tx.clone()],
                rebuild: None,
                entry_cache_bytes: crate::node::log_store::CACHE_BYTES_MAX,
                scrub: None,
                recovery: Default::default(),
                joined: false,
                membership: None,
            };
            let shard = glommio::spawn_local(Shard::run(
                setup,
                wal.clone(),
                Rc::new(NodeTransport::Alone),
            ));
            let senders = vec![tx.clone()];
            let progress = Arc::new(NodeProgress::new(1));
            progress.shard_replayed();

            // Healthy and, once the controller group elected itself, ready.
            let mut steps = 0;
            while !ready_pending(&progress, &all_status(&senders).await).is_empty() {
                steps += 1;
                assert!(steps < STEPS_MAX, "never ready");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert!(health_problems(&all_status(&senders).await).is_empty());

            // Every fdatasync fails from now on; the next write (a topic's creation) stops
            // the shard.
            disk.fail_always(FaultOp::Sync, true);
            let (reply, answer) = oneshot::channel();
            let mut inbox = tx.clone();
            inbox
                .send(ShardMsg::Controller {
                    command: Command::CreateTopic(TopicSpec {
                        name: "t".into(),
                        id: uuid::Uuid::from_u128(9),
                        partitions: 1,
                        replication_factor: 1,
                        retention: Retention::default(),
                    }),
                    reply,
                })
                .await
                .unwrap();
            let refused = answer.await.unwrap_or(Err(RequestError::ShuttingDown));
            assert!(refused.is_err(), "{refused:?}");
            let mut steps = 0;
            let problems = loop {
                let p = health_problems(&all_status(&senders).await);
                if !p.is_empty() {
                    break p;
                }
                steps += 1;
                assert!(steps < STEPS_MAX, "the shard never reported its failure");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            assert!(problems[0].contains("shard 0: failed"), "{problems:?}");
            let pending = ready_pending(&progress, &all_status(&senders).await);
            assert!(pending.iter().any(|p| p["what"] == "shard"), "{pending:?}");

            inbox.send(ShardMsg::Stop).await.unwrap();
            assert!(shard.await.is_some(), "the shard reports why it stopped");
        })
        .unwrap()
        .join()
        .unwrap();
}
