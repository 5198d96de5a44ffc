//! Two nodes on loopback (node 1 on 127.0.0.1, node 2 on 127.0.0.2, ports picked by the
//! kernel), each shard on its own glommio executor: batches for several shards, a reconnect
//! after the listening side restarts, refused handshakes, a bad frame on a live connection, and
//! the port-in-use check. Every wait is bounded in time; everything started is stopped (the
//! executors end with their futures, `PeerNetwork` stops its thread on drop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tern_net::constants::PROTOCOL_VERSION;
use tern_net::frame::encode_frame_with_version;
use tern_net::listen::{bind_glommio_listener, bind_std_listener, ensure_addr_free};
use tern_net::{
    GroupId, HeartbeatBatch, ListenError, LocalIdentity, NetError, Outbound, PeerDirectory,
    PeerEvent, PeerFrame, PeerNetwork, PeerTransport, RefuseReason, ShardPeerSetup, TcpTransport,
    TransportConfig,
};
use tern_raft::message::{Entry, EntryKind, Message, MessageBody, NodeId};

const CLUSTER: u64 = 0x7e57;
/// No test waits longer than this for anything.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("address")
}

fn test_config() -> TransportConfig {
    TransportConfig {
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    }
}

fn identity(node_id: NodeId, shard_count: u32) -> LocalIdentity {
    LocalIdentity {
        cluster_id: CLUSTER,
        node_id,
        shard_count,
    }
}

/// Runs `body` with the shard's transport on a fresh executor thread, bounded by the deadline.
fn run_shard<T, F, Fut>(setup: ShardPeerSetup, body: F) -> ExecutorJoinHandle<Option<T>>
where
    T: Send + 'static,
    F: FnOnce(TcpTransport) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("test-shard-{}", setup.shard()))
        .io_memory(256 << 10)
        .spawn(move || async move {
            let transport = setup.start();
            glommio::timer::timeout(TEST_DEADLINE, async move { Ok(body(transport).await) })
                .await
                .ok()
        })
        .expect("executor")
}

fn append(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message {
        from,
        to,
        term: 2,
        body: MessageBody::Append {
            prev_index: seq,
            prev_term: 2,
            entries: vec![Entry {
                term: 2,
                index: seq + 1,
                kind: EntryKind::Normal,
                data: seq.to_le_bytes().repeat(16),
            }],
            commit: seq,
        },
    }
}

/// Waits for the next event, bounded; `None` if none came in time.
async fn next_event(transport: &TcpTransport, wait: Duration) -> Option<PeerEvent> {
    glommio::timer::timeout(wait, async { Ok(transport.next_event().await) })
        .await
        .ok()
        .flatten()
}

fn group_of(shard: u32, i: u64) -> GroupId {
    // Groups of shard k are k, k + 2, k + 4, ...: as if placement put them there.
    u64::from(shard) + 2 * i
}

#[test]
fn two_nodes_exchange_batches_on_every_shard() {
    const SHARDS: u32 = 2;
    const MESSAGES: u64 = 300;
    // Addresses are known once both are bound; the directories are shared, so fill them then.
    let (dir1, dir2) = (PeerDirectory::default(), PeerDirectory::default());
    let (net1, setups1) = PeerNetwork::start(
        identity(1, SHARDS),
        addr("127.0.0.1"),
        dir1.clone(),
        test_config(),
    )
    .unwrap();
    let (net2, setups2) = PeerNetwork::start(
        identity(2, SHARDS),
        addr("127.0.0.2"),
        dir2.clone(),
        test_config(),
    )
    .unwrap();
    dir1.set(2, net2.local_addr());
    dir2.set(1, net1.local_addr());

    let mut handles = Vec::new();
    // Node 1 sends MESSAGES appends and a coalesced heartbeat per shard, and collects replies.
    for setup in setups1 {
        handles.push(run_shard(setup, |t: TcpTransport| async move {
            let shard = t.shard();
            for i in 0..MESSAGES {
                t.send(2, Outbound::Raft(group_of(shard, i), append(1, 2, i)))
                    .unwrap();
            }
            let mut heartbeats = HeartbeatBatch::new(1, 2);
            for i in 0..MESSAGES {
                let hb = Message {
                    from: 1,
                    to: 2,
                    term: 2,
                    body: MessageBody::Heartbeat {
                        commit: i,
                        read_seq: 0,
                        quiesce: false,
                    },
                };
                assert_eq!(heartbeats.push(group_of(shard, i), hb), None);
            }
            t.send(2, Outbound::Heartbeats(heartbeats)).unwrap();
            let mut replies = 0;
            while replies < MESSAGES {
                match next_event(&t, TEST_DEADLINE).await {
                    Some(PeerEvent::Raft { from, messages }) => {
                        assert_eq!(from, 2);
                        for (group, m) in messages {
                            assert_eq!(group % 2, u64::from(shard), "reply crossed shards");
                            assert!(matches!(
                                m.body,
                                MessageBody::AppendResp { reject: false, .. }
                            ));
                            replies += 1;
                        }
                    }
                    other => panic!("node 1 shard {shard}: unexpected {other:?}"),
                }
            }
            (shard, replies, t.stats())
        }));
    }
    // Node 2 receives, checks shard and content, and answers every append.
    for setup in setups2 {
        handles.push(run_shard(setup, |t: TcpTransport| async move {
            let shard = t.shard();
            let (mut appends, mut heartbeats) = (0u64, 0u64);
            while appends < MESSAGES || heartbeats < MESSAGES {
                match next_event(&t, TEST_DEADLINE).await {
                    Some(PeerEvent::Raft { from, messages }) => {
                        assert_eq!(from, 1);
                        for (group, m) in messages {
                            assert_eq!(group % 2, u64::from(shard), "message crossed shards");
                            assert_eq!(m, append(1, 2, appends), "in order, intact");
                            let resp = Message {
                                from: 2,
                                to: 1,
                                term: 2,
                                body: MessageBody::AppendResp {
                                    index: appends + 1,
                                    reject: false,
                                    hint_index: 0,
                                    hint_term: 0,
                                },
                            };
                            t.send(1, Outbound::Raft(group, resp)).unwrap();
                            appends += 1;
                        }
                    }
                    Some(PeerEvent::Heartbeats(batch)) => {
                        assert_eq!((batch.from, batch.to), (1, 2));
                        heartbeats += batch.heartbeats.len() as u64;
                    }
                    other => panic!("node 2 shard {shard}: unexpected {other:?}"),
                }
            }
            // Let the replies leave before the transport is dropped.
            let start = Instant::now();
            while t.stats().messages_sent < MESSAGES && start.elapsed() < TEST_DEADLINE {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            (shard, appends + heartbeats, t.stats())
        }));
    }
    for handle in handles {
        let (shard, count, stats) = handle
            .join()
            .unwrap()
            .expect("shard finished within the deadline");
        assert!(count >= MESSAGES, "shard {shard}: {count}");
        assert_eq!(
            stats.dropped_queue_full + stats.dropped_unreachable,
            0,
            "{stats:?}"
        );
        assert_eq!(
            stats.connects, 1,
            "one connection per peer and shard: {stats:?}"
        );
        // Batched: far fewer frames than messages.
        assert!(stats.frames_sent < stats.messages_sent, "{stats:?}");
    }
    drop((net1, net2));
}

#[test]
fn reconnects_after_the_listening_node_restarts() {
    let stop_sending = Arc::new(AtomicBool::new(false));
    let dir2 = PeerDirectory::default();
    let (net2, setups2) = PeerNetwork::start(
        identity(2, 1),
        addr("127.0.0.2"),
        dir2.clone(),
        test_config(),
    )
    .unwrap();
    let addr2 = net2.local_addr();
    let dir1 = PeerDirectory::new([(2, addr2)]);
    let (net1, setups1) =
        PeerNetwork::start(identity(1, 1), addr("127.0.0.1"), dir1, test_config()).unwrap();
    dir2.set(1, net1.local_addr());

    // Node 1 sends a numbered append every 5 ms until told to stop.
    let stop = stop_sending.clone();
    let sender = run_shard(
        setups1.into_iter().next().unwrap(),
        move |t: TcpTransport| async move {
            let mut unreachable = 0;
            let mut seq = 0;
            while !stop.load(Ordering::Acquire) {
                let _ = t.send(2, Outbound::Raft(0, append(1, 2, seq)));
                seq += 1;
                while let Some(event) = next_event(&t, Duration::from_millis(5)).await {
                    if event == (PeerEvent::Unreachable { peer: 2 }) {
                        unreachable += 1;
                    }
                }
            }
            (unreachable, t.stats())
        },
    );

    // Node 2, first life: takes 5 messages, then stops (its executor ends, its listener closes).
    let receive = |count: usize| {
        move |t: TcpTransport| async move {
            let mut seqs = Vec::new();
            while seqs.len() < count {
                if let Some(PeerEvent::Raft { messages, .. }) = next_event(&t, TEST_DEADLINE).await
                {
                    seqs.extend(messages.iter().map(|(_, m)| match m.body {
                        MessageBody::Append { prev_index, .. } => prev_index,
                        _ => u64::MAX,
                    }));
                }
            }
            seqs
        }
    };
    let first = run_shard(setups2.into_iter().next().unwrap(), receive(5))
        .join()
        .unwrap()
        .expect("first life");
    drop(net2);

    // Down for a while: node 1's sends fail.
    std::thread::sleep(Duration::from_millis(300));

    // Second life on the same address.
    let (net2, setups2) = PeerNetwork::start(identity(2, 1), addr2, dir2, test_config()).unwrap();
    let second = run_shard(setups2.into_iter().next().unwrap(), receive(5))
        .join()
        .unwrap()
        .expect("second life");
    stop_sending.store(true, Ordering::Release);
    let (unreachable, stats) = sender.join().unwrap().expect("sender finished");

    assert!(
        second[0] > *first.last().unwrap(),
        "later messages after the restart: {first:?} then {second:?}"
    );
    assert!(
        unreachable >= 1,
        "node 1 was told node 2 was unreachable: {stats:?}"
    );
    assert!(stats.connects >= 2, "reconnected: {stats:?}");
    assert!(
        stats.connect_failures >= 1 && stats.dropped_unreachable >= 1,
        "{stats:?}"
    );
    drop((net1, net2));
}

#[test]
fn a_node_of_another_cluster_is_refused_and_reported_unreachable() {
    let dir2 = PeerDirectory::new([(1, "127.0.0.1:1".parse().unwrap())]);
    let (net2, setups2) =
        PeerNetwork::start(identity(2, 1), addr("127.0.0.2"), dir2, test_config()).unwrap();
    let foreign = LocalIdentity {
        cluster_id: CLUSTER + 1,
        ..identity(1, 1)
    };
    let dir1 = PeerDirectory::new([(2, net2.local_addr())]);
    let (net1, setups1) =
        PeerNetwork::start(foreign, addr("127.0.0.1"), dir1, test_config()).unwrap();
    let receiver = run_shard(
        setups2.into_iter().next().unwrap(),
        |t: TcpTransport| async move {
            // Nothing must arrive.
            let event = next_event(&t, Duration::from_millis(500)).await;
            (event, t.stats())
        },
    );
    let sender = run_shard(
        setups1.into_iter().next().unwrap(),
        |t: TcpTransport| async move {
            t.send(2, Outbound::Raft(0, append(1, 2, 0))).unwrap();
            let event = next_event(&t, TEST_DEADLINE).await;
            (event, t.stats())
        },
    );
    let (event, stats) = sender.join().unwrap().expect("sender");
    assert_eq!(event, Some(PeerEvent::Unreachable { peer: 2 }));
    assert_eq!(
        (stats.handshakes_refused, stats.dropped_unreachable),
        (1, 1),
        "{stats:?}"
    );
    let (event, stats) = receiver.join().unwrap().expect("receiver");
    assert_eq!(event, None);
    assert_eq!(stats.messages_received, 0);
    drop((net1, net2));
}

/// Sends one frame as a raw client and returns what the node answers.
fn raw_exchange(to: SocketAddr, frame: &[u8]) -> Option<PeerFrame> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(frame).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    PeerFrame::decode(&answer).ok().map(|(frame, _)| frame)
}

fn refusal_reason(answer: Option<PeerFrame>) -> RefuseReason {
    match answer {
        Some(PeerFrame::Refuse(refusal)) => refusal.reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn mismatched_hellos_get_the_reason_back() {
    let dir = PeerDirectory::new([(1, "127.0.0.1:1".parse().unwrap())]);
    let (net2, _setups) =
        PeerNetwork::start(identity(2, 2), addr("127.0.0.2"), dir, test_config()).unwrap();
    let to = net2.local_addr();
    let hello = |edit: &dyn Fn(&mut tern_net::Hello)| {
        let mut hello = identity(1, 2).hello(2, 0);
        edit(&mut hello);
        let mut buf = Vec::new();
        PeerFrame::Hello(hello).encode(&mut buf);
        buf
    };
    let cases: [(&str, Vec<u8>, RefuseReason); 7] = [
        (
            "other cluster",
            hello(&|h| h.cluster_id += 1),
            RefuseReason::ClusterMismatch,
        ),
        (
            "unknown node",
            hello(&|h| h.node_id = 5),
            RefuseReason::UnexpectedNode,
        ),
        (
            "dialed another node",
            hello(&|h| h.to_node = 3),
            RefuseReason::UnexpectedNode,
        ),
        (
            "shard out of range",
            hello(&|h| h.shard = 2),
            RefuseReason::ShardOutOfRange,
        ),
        (
            "shard count",
            hello(&|h| h.shard_count = 3),
            RefuseReason::ShardCountMismatch,
        ),
        (
            "hello version",
            hello(&|h| h.protocol_version = 9),
            RefuseReason::VersionUnsupported,
        ),
        (
            "frame version",
            {
                let mut buf = Vec::new();
                encode_frame_with_version(&mut buf, PROTOCOL_VERSION + 1, 1, |out| {
                    identity(1, 2).hello(2, 0).encode(out)
                });
                buf
            },
            RefuseReason::VersionUnsupported,
        ),
    ];
    for (name, frame, reason) in cases {
        assert_eq!(refusal_reason(raw_exchange(to, &frame)), reason, "{name}");
    }
    // A first frame claiming more than a handshake needs is refused before it is read.
    let mut huge = vec![0u8; 12];
    huge[0..4].copy_from_slice(&100_000u32.to_le_bytes());
    assert_eq!(
        refusal_reason(raw_exchange(to, &huge)),
        RefuseReason::Malformed
    );
    let mut not_hello = Vec::new();
    PeerFrame::Raft(Vec::new()).encode(&mut not_hello);
    assert_eq!(
        refusal_reason(raw_exchange(to, &not_hello)),
        RefuseReason::Malformed
    );
    assert_eq!(
        refusal_reason(raw_exchange(to, b"GET / HTTP/1.1\r\n\r\n")),
        RefuseReason::Malformed
    );
    drop(net2);
}

#[test]
fn a_bad_frame_on_a_live_connection_closes_it() {
    let dir = PeerDirectory::new([(1, "127.0.0.1:1".parse().unwrap())]);
    let (net2, setups) =
        PeerNetwork::start(identity(2, 1), addr("127.0.0.2"), dir, test_config()).unwrap();
    let to = net2.local_addr();
    let node = run_shard(
        setups.into_iter().next().unwrap(),
        |t: TcpTransport| async move {
            let start = Instant::now();
            while t.stats().inbound_errors == 0 && start.elapsed() < TEST_DEADLINE {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            t.stats()
        },
    );
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = Vec::new();
    PeerFrame::Hello(identity(1, 1).hello(2, 0)).encode(&mut hello);
    stream.write_all(&hello).unwrap();
    let mut answer = [0u8; 12 + tern_net::handshake::HELLO_BYTES];
    stream.read_exact(&mut answer).unwrap();
    assert!(matches!(PeerFrame::decode(&answer), Ok((PeerFrame::Hello(h), _)) if h.node_id == 2));
    // A frame whose checksum does not match.
    let mut bad = Vec::new();
    PeerFrame::Raft(Vec::new()).encode(&mut bad);
    bad[4] ^= 1;
    stream.write_all(&bad).unwrap();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest).is_ok() && rest.is_empty();
    assert!(closed, "the node closed the connection");
    let stats = node.join().unwrap().expect("node");
    assert_eq!(stats.inbound_errors, 1);
    assert_eq!(stats.messages_received, 0);
    drop(net2);
}

#[test]
fn a_port_in_use_is_refused_at_start() {
    let taken = bind_std_listener(addr("127.0.0.1")).unwrap();
    let at = taken.local_addr().unwrap();
    assert!(matches!(
        ensure_addr_free(at),
        Err(ListenError::AddrInUse { .. })
    ));
    let started = PeerNetwork::start(identity(1, 1), at, PeerDirectory::default(), test_config());
    assert!(matches!(
        started,
        Err(NetError::Listen(ListenError::AddrInUse { .. }))
    ));
    drop(taken);

    // glommio's listener sets SO_REUSEPORT; a second bind through the helper is still refused,
    // and so is a plain probe.
    let refused = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let first = bind_glommio_listener(addr("127.0.0.1")).unwrap();
            let at = first.local_addr().unwrap();
            let second = bind_glommio_listener(at);
            let probe = ensure_addr_free(at);
            (
                matches!(second, Err(ListenError::AddrInUse { .. })),
                matches!(probe, Err(ListenError::AddrInUse { .. })),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(refused, (true, true));
}

/// A node restarted right after a crash: connections its previous process had accepted
/// linger in the kernel (bound to the port, SO_REUSEPORT from glommio's listener, no
/// SO_REUSEADDR) although nothing listens any more. The port is free for the new node.
#[test]
fn a_port_held_only_by_connections_of_a_dead_listener_is_free() {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_reuse_port(true).unwrap();
    listener.bind(&addr("127.0.0.1").into()).unwrap();
    listener.listen(8).unwrap();
    let at = listener.local_addr().unwrap().as_socket().unwrap();
    let client = std::net::TcpStream::connect(at).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(listener);
    // The plain probe alone is refused next to the accepted socket ...
    assert!(matches!(
        bind_std_listener(at),
        Err(ListenError::AddrInUse { .. })
    ));
    // ... but nothing listens, so the port counts as free.
    assert_eq!(ensure_addr_free(at).unwrap(), at);
    drop((client, accepted));
}

#[test]
fn a_full_queue_drops_and_counts_and_an_oversize_message_is_refused() {
    let config = TransportConfig {
        send_queue_messages_max: 4,
        ..test_config()
    };
    // Node 2's address is a listener nobody accepts on: the messages only queue.
    let parked = bind_std_listener(addr("127.0.0.2")).unwrap();
    let dir = PeerDirectory::new([(2, parked.local_addr().unwrap())]);
    let (net1, setups) =
        PeerNetwork::start(identity(1, 1), addr("127.0.0.1"), dir, config).unwrap();
    let results = run_shard(
        setups.into_iter().next().unwrap(),
        |t: TcpTransport| async move {
            // No await between the sends: the writer cannot take any of them out meanwhile.
            let sent: Vec<_> = (0..10)
                .map(|i| t.send(2, Outbound::Raft(0, append(1, 2, i))))
                .collect();
            let mut huge = append(1, 2, 0);
            if let MessageBody::Append { entries, .. } = &mut huge.body {
                entries[0].data = vec![0; tern_net::constants::FRAME_PAYLOAD_BYTES_MAX];
            }
            let too_large = t.send(2, Outbound::Raft(0, huge));
            let unknown = t.send(7, Outbound::Raft(0, append(1, 7, 0)));
            (sent, too_large, unknown, t.stats())
        },
    )
    .join()
    .unwrap()
    .expect("shard");
    let (sent, too_large, unknown, stats) = results;
    assert!(sent[..4].iter().all(Result::is_ok), "{sent:?}");
    assert!(
        sent[4..]
            .iter()
            .all(|r| *r == Err(tern_net::SendError::QueueFull(2))),
        "{sent:?}"
    );
    assert_eq!(stats.dropped_queue_full, 6);
    assert!(matches!(
        too_large,
        Err(tern_net::SendError::TooLarge { to: 2, .. })
    ));
    assert_eq!(unknown, Err(tern_net::SendError::UnknownPeer(7)));
    drop((net1, parked));
}

#[test]
fn a_silent_dialer_delays_handshakes_only_until_the_handshake_timeout() {
    let config = TransportConfig {
        handshake_timeout: Duration::from_millis(200),
        ..test_config()
    };
    let dir2 = PeerDirectory::default();
    let (net2, setups2) = PeerNetwork::start(
        identity(2, 1),
        addr("127.0.0.2"),
        dir2.clone(),
        config.clone(),
    )
    .unwrap();
    let dir1 = PeerDirectory::new([(2, net2.local_addr())]);
    let (net1, setups1) =
        PeerNetwork::start(identity(1, 1), addr("127.0.0.1"), dir1, config).unwrap();
    dir2.set(1, net1.local_addr());

    // Connects and says nothing: the acceptor gives up on it after the timeout and closes it.
    let mut silent =
        TcpStream::connect_timeout(&net2.local_addr(), Duration::from_secs(5)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let receiver = run_shard(
        setups2.into_iter().next().unwrap(),
        |t: TcpTransport| async move { next_event(&t, TEST_DEADLINE).await },
    );
    let sender = run_shard(
        setups1.into_iter().next().unwrap(),
        |t: TcpTransport| async move {
            // Resent until it arrives: the first attempt may queue behind the silent dialer.
            let start = Instant::now();
            while t.stats().messages_sent == 0 && start.elapsed() < TEST_DEADLINE {
                let _ = t.send(2, Outbound::Raft(0, append(1, 2, 0)));
                let _ = next_event(&t, Duration::from_millis(50)).await;
            }
            t.stats()
        },
    );
    let mut nothing = Vec::new();
    assert_eq!(
        silent.read_to_end(&mut nothing).map(|_| nothing.len()).ok(),
        Some(0),
        "closed"
    );
    let event = receiver.join().unwrap().expect("receiver");
    assert!(
        matches!(event, Some(PeerEvent::Raft { from: 1, .. })),
        "{event:?}"
    );
    let stats = sender.join().unwrap().expect("sender");
    // The dialer's own handshake may have timed out behind the silent one (both wait
    // `handshake_timeout`); then it retried after its backoff and got through.
    assert!(stats.messages_sent >= 1 && stats.connects == 1, "{stats:?}");
    assert!(stats.connect_failures <= 1, "{stats:?}");
    drop((net1, net2));
}
