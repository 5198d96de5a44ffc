//! Messages of every kind, shared by the codec tests.
#![allow(dead_code)]

use tern_net::GroupId;
use tern_raft::message::{ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta};

fn msg(term: u64, body: MessageBody) -> Message {
    Message {
        from: 1,
        to: 2,
        term,
        body,
    }
}

/// One message of every `MessageBody` variant (and both values of every flag), with groups.
pub fn every_variant() -> Vec<(GroupId, Message)> {
    let conf = ConfState {
        voters: vec![1, 2, 3],
        voters_outgoing: vec![1, 2, 4],
        learners: vec![9],
    };
    let bodies = vec![
        MessageBody::Append {
            prev_index: 10,
            prev_term: 3,
            entries: vec![
                Entry {
                    term: 3,
                    index: 11,
                    kind: EntryKind::Normal,
                    data: b"record batch".to_vec(),
                },
                Entry {
                    term: 4,
                    index: 12,
                    kind: EntryKind::ConfChange,
                    data: conf.encode(),
                },
                Entry {
                    term: 5,
                    index: 13,
                    kind: EntryKind::Normal,
                    data: Vec::new(),
                },
            ],
            commit: 9,
        },
        MessageBody::Append {
            prev_index: 13,
            prev_term: 5,
            entries: Vec::new(),
            commit: 13,
        },
        MessageBody::AppendResp {
            index: 13,
            reject: false,
            hint_index: 0,
            hint_term: 0,
        },
        MessageBody::AppendResp {
            index: 20,
            reject: true,
            hint_index: 7,
            hint_term: 2,
        },
        MessageBody::Heartbeat {
            commit: 12,
            read_seq: 77,
            quiesce: true,
        },
        MessageBody::HeartbeatResp { read_seq: 77 },
        MessageBody::Vote {
            pre: true,
            last_index: 13,
            last_term: 5,
            transfer: false,
        },
        MessageBody::Vote {
            pre: false,
            last_index: 13,
            last_term: 5,
            transfer: true,
        },
        MessageBody::VoteResp {
            pre: true,
            reject: false,
        },
        MessageBody::VoteResp {
            pre: false,
            reject: true,
        },
        MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: 100,
                term: 4,
                conf: conf.clone(),
                size_bytes: 10,
            },
            offset: 4,
            data: b"chunk!".to_vec(),
        },
        MessageBody::SnapshotResp {
            index: 100,
            next_offset: 10,
        },
        MessageBody::TimeoutNow,
        MessageBody::ReadIndex { ctx: 5 },
        MessageBody::ReadIndexResp { ctx: 5, index: 13 },
        MessageBody::Rebuilding { last_index: 3 },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| (i as GroupId * 1000 + 7, msg(5, body)))
        .collect()
}
