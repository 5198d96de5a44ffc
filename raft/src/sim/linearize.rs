//! A linearizability checker for the key-value history (Wing & Gong's search with Lowe's
//! memoisation). Keys are independent registers, and linearizability is local, so each key's
//! sub-history is checked on its own.
//!
//! An operation that timed out has no return event: it may have taken effect at any point
//! after its call, or never. It is placed in the search with a return at "infinity", where
//! linearizing it last (after every completed operation) is the same as it never happening.

use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put(u64),
    Get,
    Cas { expected: u64, new: u64 },
}

/// One client operation. Times come from one counter, so no two events tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: u8,
    pub kind: OpKind,
    pub call: u64,
    /// `None`: timed out, outcome unknown.
    pub ret: Option<u64>,
    /// Get: the value read. Cas: 1 if it succeeded. Put: unused.
    pub output: u64,
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: u8,
    },
    /// The search exceeded its budget; no verdict.
    Unknown,
}

/// Search steps allowed per key before giving up (bounds the exponential worst case).
const SEARCH_STEPS_MAX: u64 = 2_000_000;

pub fn check(history: &[Op]) -> Verdict {
    let mut keys: Vec<u8> = history.iter().map(|o| o.key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut unknown = false;
    for key in keys {
        // A get that timed out constrains nothing.
        let ops: Vec<Op> = history
            .iter()
            .filter(|o| o.key == key && !(o.kind == OpKind::Get && o.ret.is_none()))
            .copied()
            .collect();
        match check_register(&ops) {
            Some(true) => {}
            Some(false) => return Verdict::NotLinearizable { key },
            None => unknown = true,
        }
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    }
}

/// Applies `op` to register value `state`; `None` if the op's output is impossible there.
fn step(state: u64, op: &Op) -> Option<u64> {
    match op.kind {
        OpKind::Put(v) => Some(v),
        OpKind::Get => (op.output == state).then_some(state),
        OpKind::Cas { expected, new } => {
            let succeeds = state == expected;
            if op.ret.is_none() {
                return Some(if succeeds { new } else { state });
            }
            if succeeds != (op.output == 1) {
                return None;
            }
            Some(if succeeds { new } else { state })
        }
    }
}

/// `Some(true)` if linearizable, `Some(false)` if not, `None` if the budget ran out.
fn check_register(ops: &[Op]) -> Option<bool> {
    // Events: (time, op, is_return), sorted by time; node 0 is the list head.
    let mut events: Vec<(u64, usize, bool)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, i, false));
        events.push((op.ret.unwrap_or(u64::MAX), i, true));
    }
    events.sort_by_key(|&(t, i, r)| (t, r, i));
    let n = events.len();
    let (mut next, mut prev) = (vec![0usize; n + 2], vec![0usize; n + 2]);
    // Node k+1 is events[k]; node 0 is the head, node n+1 the tail sentinel.
    for k in 0..=n {
        next[k] = k + 1;
        prev[k + 1] = k;
    }
    let mut ret_node = vec![0usize; ops.len()];
    for (k, &(_, i, r)) in events.iter().enumerate() {
        if r {
            ret_node[i] = k + 1;
        }
    }
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut entry = next[0];
    let mut steps = 0u64;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        prev[nx] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        prev[nx] = x;
    };
    while next[0] != n + 1 {
        steps += 1;
        if steps > SEARCH_STEPS_MAX {
            return None;
        }
        if entry == n + 1 {
            // Only reachable if the list still holds calls we could not place: backtrack.
            let Some((call, old)) = stack.pop() else {
                return Some(false);
            };
            let i = events[call - 1].1;
            linearized[i / 64] &= !(1 << (i % 64));
            state = old;
            relink(&mut next, &mut prev, ret_node[i]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
            continue;
        }
        let (_, i, is_ret) = events[entry - 1];
        if !is_ret {
            if let Some(new_state) = step(state, &ops[i]) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_node[i]);
                    entry = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // An operation returned before we could linearize it: undo the last choice.
            let Some((call, old)) = stack.pop() else {
                return Some(false);
            };
            let j = events[call - 1].1;
            linearized[j / 64] &= !(1 << (j % 64));
            state = old;
            relink(&mut next, &mut prev, ret_node[j]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, call: u64, ret: Option<u64>, output: u64) -> Op {
        Op {
            key: 1,
            kind,
            call,
            ret,
            output,
        }
    }

    #[test]
    fn accepts_concurrent_overlaps_and_rejects_a_stale_read() {
        // put(1) completes, then a get that starts afterwards reads the old value 0.
        let stale = [
            op(OpKind::Put(1), 1, Some(2), 0),
            op(OpKind::Get, 3, Some(4), 0),
        ];
        assert_eq!(check(&stale), Verdict::NotLinearizable { key: 1 });
        // The same get overlapping the put may read either value.
        let overlap = [
            op(OpKind::Put(1), 1, Some(4), 0),
            op(OpKind::Get, 2, Some(3), 0),
        ];
        assert_eq!(check(&overlap), Verdict::Linearizable);
    }

    #[test]
    fn timed_out_write_may_or_may_not_have_happened() {
        let happened = [
            op(OpKind::Put(7), 1, None, 0),
            op(OpKind::Get, 2, Some(3), 7),
            op(OpKind::Get, 4, Some(5), 7),
        ];
        assert_eq!(check(&happened), Verdict::Linearizable);
        let never = [
            op(OpKind::Put(7), 1, None, 0),
            op(OpKind::Get, 2, Some(3), 0),
        ];
        assert_eq!(check(&never), Verdict::Linearizable);
        // But it cannot un-happen: 7, then 0 again, with no other writer.
        let flicker = [
            op(OpKind::Put(7), 1, None, 0),
            op(OpKind::Get, 2, Some(3), 7),
            op(OpKind::Get, 4, Some(5), 0),
        ];
        assert_eq!(check(&flicker), Verdict::NotLinearizable { key: 1 });
    }

    #[test]
    fn cas_outcomes_must_agree_with_the_register() {
        let ok = [
            op(OpKind::Put(1), 1, Some(2), 0),
            op(
                OpKind::Cas {
                    expected: 1,
                    new: 2,
                },
                3,
                Some(4),
                1,
            ),
            op(OpKind::Get, 5, Some(6), 2),
        ];
        assert_eq!(check(&ok), Verdict::Linearizable);
        let lost_update = [
            op(OpKind::Put(1), 1, Some(2), 0),
            op(
                OpKind::Cas {
                    expected: 1,
                    new: 2,
                },
                3,
                Some(4),
                1,
            ),
            op(
                OpKind::Cas {
                    expected: 1,
                    new: 3,
                },
                5,
                Some(6),
                1,
            ),
        ];
        assert_eq!(check(&lost_update), Verdict::NotLinearizable { key: 1 });
    }
}
