//! Message mutations: the simulator delivers, next to a real message, a copy whose fields were
//! made inconsistent, as a buggy or confused peer (or a corrupted frame that passed its
//! checksum) would send it. `RawNode::step` must refuse it and change nothing; the invariants
//! checked after every step show that it did.

use super::rng::Rng;
use crate::message::{ConfState, EntryKind, Message, MessageBody, NO_NODE};

/// What `step` must do with a mutant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No correct peer sends this, whatever the receiver's state: it must be refused.
    Refused,
    /// Wrong only against the receiver's state (an acknowledgement of an index it never had,
    /// an unsent read sequence, ...): refused or ignored depending on that state, and never
    /// harmful, which the invariants check.
    Harmless,
}

/// Returns a mutated copy of `m` (in a cluster of nodes `1..=nodes`) and what `step` must do
/// with it, or `None` when the mutation drawn does not apply to this kind of message.
pub fn mutate(m: &Message, rng: &mut Rng, nodes: u64) -> Option<(Message, Expect)> {
    let mut x = m.clone();
    let expect = match rng.below(11) {
        0 => {
            x.to = m.to % nodes + 1;
            Expect::Refused
        }
        1 => {
            x.from = NO_NODE;
            Expect::Refused
        }
        2 => {
            x.from = m.to;
            Expect::Refused
        }
        3 => {
            x.term = u64::MAX - rng.below(3);
            Expect::Refused
        }
        4 => mutate_append(&mut x, rng)?,
        5 => match &mut x.body {
            MessageBody::Snapshot { meta, offset, .. } => {
                if rng.chance(500) {
                    *offset = meta.size_bytes + 1 + rng.below(10);
                } else {
                    meta.conf = ConfState::default();
                }
                Expect::Refused
            }
            _ => return None,
        },
        6 => match &mut x.body {
            MessageBody::AppendResp {
                index,
                reject: true,
                hint_index,
                ..
            } => {
                *hint_index = *index + 1 + rng.below(100);
                Expect::Refused
            }
            MessageBody::AppendResp { index, .. } => {
                *index += 1_000 + rng.below(1_000);
                Expect::Harmless
            }
            _ => return None,
        },
        7 => match &mut x.body {
            MessageBody::Vote { last_term, .. } => {
                *last_term = m.term + 1;
                Expect::Refused
            }
            _ => return None,
        },
        8 => match &mut x.body {
            MessageBody::HeartbeatResp { read_seq } => {
                *read_seq += 1_000 + rng.below(1_000);
                Expect::Harmless
            }
            _ => return None,
        },
        9 => match &mut x.body {
            MessageBody::ReadIndexResp { ctx, index } => {
                *ctx = rng.next_u64();
                *index += rng.below(50);
                Expect::Harmless
            }
            _ => return None,
        },
        _ => {
            // Any sender asks the receiver to campaign: refused unless it is the known
            // leader, and campaigning is always safe.
            x.body = MessageBody::TimeoutNow;
            Expect::Harmless
        }
    };
    Some((x, expect))
}

fn mutate_append(x: &mut Message, rng: &mut Rng) -> Option<Expect> {
    let term = x.term;
    let MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        ..
    } = &mut x.body
    else {
        return None;
    };
    if entries.is_empty() {
        if *prev_index == 0 {
            return None;
        }
        *prev_term = 0;
        return Some(Expect::Refused);
    }
    let k = rng.below(entries.len() as u64) as usize;
    match rng.below(4) {
        // A gap (or an overlap) in the indexes.
        0 => entries[k].index += 1 + rng.below(3),
        // An entry from a term the sender has not reached.
        1 => entries[k].term = term + 1,
        // Terms going backwards: below the entry (or prev_term) before it.
        2 => {
            let before = if k == 0 {
                *prev_term
            } else {
                entries[k - 1].term
            };
            if before <= 1 {
                // Refused as terms going back, a term above the sender's, or a non-zero term
                // at index 0, whichever applies.
                *prev_term = entries[0].term + 1;
            } else {
                entries[k].term = before - 1;
            }
        }
        // A configuration entry that does not decode.
        _ => {
            entries[k].kind = EntryKind::ConfChange;
            entries[k].data = vec![1, 2, 3];
        }
    }
    Some(Expect::Refused)
}
