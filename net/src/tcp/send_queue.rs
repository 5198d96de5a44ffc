//! The bounded queue of messages waiting for one peer's connection.
//!
//! Bounded in messages and in encoded bytes; `push` on a full queue refuses (the caller drops
//! the message: Raft retransmits). The writer task takes messages out in frame-sized batches.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use crate::heartbeat::HeartbeatBatch;
use crate::message_codec::{batch_encoded_bytes, message_encoded_bytes};
use crate::node_report::NodeReport;
use crate::transport::Outbound;

pub(crate) struct SendQueue {
    items: VecDeque<(Outbound, usize)>,
    /// Invariant: the sum of the sizes in `items`.
    bytes: usize,
    messages_max: usize,
    bytes_max: usize,
    waker: Option<Waker>,
    closed: bool,
}

/// The bytes an outbound message adds to a frame payload.
pub(crate) fn outbound_bytes(outbound: &Outbound) -> usize {
    match outbound {
        Outbound::Raft(_, message) => message_encoded_bytes(message),
        Outbound::Heartbeats(batch) => batch.encoded_bytes(),
        Outbound::Repair(repair) => repair.encoded_bytes(),
        Outbound::Report(report) => report.encoded_bytes(),
        Outbound::Recovery(message) => message.encoded_bytes(),
    }
}

/// Messages taken for one write: Raft messages batched into frames, and heartbeat batches.
#[derive(Default)]
pub(crate) struct Drained {
    pub raft_frames: Vec<Vec<(crate::GroupId, tern_raft::message::Message)>>,
    pub heartbeats: Vec<HeartbeatBatch>,
    pub repairs: Vec<crate::entry_repair::EntryRepair>,
    pub reports: Vec<NodeReport>,
    pub recovery: Vec<crate::recovery_stream::RecoveryMessage>,
    pub messages: u64,
}

impl SendQueue {
    pub(crate) fn new(messages_max: usize, bytes_max: usize) -> Self {
        SendQueue {
            items: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
            waker: None,
            closed: false,
        }
    }

    /// Queues `outbound` of `bytes`; false (and `outbound` dropped) if the queue is full.
    pub(crate) fn push(&mut self, outbound: Outbound, bytes: usize) -> bool {
        if self.items.len() >= self.messages_max || self.bytes + bytes > self.bytes_max {
            return false;
        }
        self.items.push_back((outbound, bytes));
        self.bytes += bytes;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn close(&mut self) {
        self.closed = true;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Drops everything queued; returns how many messages were dropped.
    pub(crate) fn clear(&mut self) -> u64 {
        let count = self.items.len() as u64;
        self.items.clear();
        self.bytes = 0;
        count
    }

    /// Takes messages for one socket write of at most about `write_bytes_max`, packed into
    /// frames of at most `frame_bytes_max` payload each (a single larger message gets a frame
    /// of its own). Always takes at least one message if any is queued.
    pub(crate) fn drain(&mut self, frame_bytes_max: usize, write_bytes_max: usize) -> Drained {
        let mut drained = Drained::default();
        let mut frame: Vec<_> = Vec::new();
        let mut frame_bytes = 0usize;
        let mut taken_bytes = 0usize;
        while let Some((_, bytes)) = self.items.front() {
            let bytes = *bytes;
            if drained.messages > 0 && taken_bytes + bytes > write_bytes_max {
                break;
            }
            let Some((outbound, _)) = self.items.pop_front() else {
                break;
            };
            self.bytes -= bytes;
            taken_bytes += bytes;
            drained.messages += 1;
            match outbound {
                Outbound::Heartbeats(batch) => drained.heartbeats.push(batch),
                Outbound::Repair(repair) => drained.repairs.push(repair),
                Outbound::Report(report) => drained.reports.push(report),
                Outbound::Recovery(message) => drained.recovery.push(message),
                Outbound::Raft(group, message) => {
                    // Counted as the frame's payload (with the batch's count field), so a frame
                    // of several messages never passes `frame_bytes_max`.
                    if !frame.is_empty()
                        && batch_encoded_bytes(frame_bytes + bytes) > frame_bytes_max
                    {
                        drained.raft_frames.push(std::mem::take(&mut frame));
                        frame_bytes = 0;
                    }
                    frame.push((group, message));
                    frame_bytes += bytes;
                }
            }
        }
        if !frame.is_empty() {
            drained.raft_frames.push(frame);
        }
        drained
    }
}

/// Waits until the queue holds something (true) or is closed (false).
pub(crate) async fn wait_ready(queue: &std::cell::RefCell<SendQueue>) -> bool {
    poll_fn(|cx| {
        let mut queue = queue.borrow_mut();
        if queue.closed {
            Poll::Ready(false)
        } else if !queue.items.is_empty() {
            Poll::Ready(true)
        } else {
            queue.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft::message::{Message, MessageBody};

    fn heartbeat_resp(seq: u64) -> Outbound {
        Outbound::Raft(
            seq,
            Message {
                from: 1,
                to: 2,
                term: 1,
                body: MessageBody::HeartbeatResp { read_seq: seq },
            },
        )
    }

    fn push(queue: &mut SendQueue, outbound: Outbound) -> bool {
        let bytes = outbound_bytes(&outbound);
        queue.push(outbound, bytes)
    }

    #[test]
    fn full_queue_refuses_by_count_and_by_bytes() {
        let one = outbound_bytes(&heartbeat_resp(0));
        let mut queue = SendQueue::new(3, 1 << 20);
        assert!((0..3).all(|i| push(&mut queue, heartbeat_resp(i))));
        assert!(!push(&mut queue, heartbeat_resp(3)));
        assert_eq!(queue.len(), 3);

        let mut queue = SendQueue::new(100, 2 * one);
        assert!(push(&mut queue, heartbeat_resp(0)) && push(&mut queue, heartbeat_resp(1)));
        assert!(!push(&mut queue, heartbeat_resp(2)));
        assert_eq!(queue.clear(), 2);
        assert!(
            push(&mut queue, heartbeat_resp(3)),
            "room again after clear"
        );
    }

    #[test]
    fn drain_packs_frames_and_bounds_one_write() {
        let one = outbound_bytes(&heartbeat_resp(0));
        let mut queue = SendQueue::new(1000, 1 << 20);
        for i in 0..100 {
            assert!(push(&mut queue, heartbeat_resp(i)));
        }
        assert!(push(
            &mut queue,
            Outbound::Heartbeats(HeartbeatBatch::new(1, 2))
        ));
        // Frames of 10 messages (plus the count field), writes of 35 messages at most.
        let drained = queue.drain(batch_encoded_bytes(10 * one), 35 * one);
        assert_eq!(drained.messages, 35);
        let sizes: Vec<usize> = drained.raft_frames.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 10, 5]);
        assert!(drained.heartbeats.is_empty());
        let rest = queue.drain(usize::MAX, usize::MAX);
        assert_eq!(rest.messages, 66);
        assert_eq!(rest.heartbeats.len(), 1);
        let order: Vec<u64> = rest.raft_frames.concat().iter().map(|(g, _)| *g).collect();
        assert_eq!(order, (35..100).collect::<Vec<_>>(), "order kept");
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn one_message_above_the_frame_limit_still_goes_alone() {
        let mut queue = SendQueue::new(10, 1 << 20);
        assert!(push(&mut queue, heartbeat_resp(0)));
        let drained = queue.drain(1, 1);
        assert_eq!((drained.messages, drained.raft_frames.len()), (1, 1));
    }
}
