//! Where a partition's replicas go: balanced and deterministic.
//!
//! A pure function of the controller state and the command being applied (whose topic UUID
//! seeds the tie-breaks), so every node computes the same placement. Rule, per partition in
//! partition order:
//!
//! 1. Replicas: the `rf` members hosting the fewest replicas; ties broken by a hash of
//!    (topic id, partition, node id), so equal nodes take turns instead of node 1 always
//!    winning.
//! 2. Preferred leader (the first replica): among the chosen, the one that is preferred
//!    leader of the fewest partitions (same tie-break). The rebalancer transfers leadership
//!    to it, so leaders spread over nodes too.
//! 3. The counts are updated before the next partition.
//!
//! With N members and a topic of P partitions at RF r on an empty cluster, each node hosts
//! ⌊P·r/N⌋ or ⌈P·r/N⌉ replicas and leads ⌊P/N⌋ or ⌈P/N⌉ (the unit tests check it).

use std::collections::BTreeMap;

use uuid::Uuid;

/// Replica and preferred-leader counts per member.
#[derive(Debug, Clone, Default)]
pub struct Load {
    replicas: BTreeMap<u64, u64>,
    leaders: BTreeMap<u64, u64>,
}

impl Load {
    /// Zero counts for `members`.
    pub fn new(members: impl IntoIterator<Item = u64>) -> Self {
        let replicas: BTreeMap<u64, u64> = members.into_iter().map(|m| (m, 0)).collect();
        let leaders = replicas.clone();
        Load { replicas, leaders }
    }

    /// Counts one partition's replica list (first = preferred leader). Replicas on nodes that
    /// are not members are ignored.
    pub fn add(&mut self, replicas: &[u64]) {
        for (i, r) in replicas.iter().enumerate() {
            if let Some(n) = self.replicas.get_mut(r) {
                *n += 1;
                if i == 0 {
                    *self.leaders.get_mut(r).expect("leaders has every member") += 1;
                }
            }
        }
    }

    pub fn replicas_of(&self, node: u64) -> u64 {
        self.replicas.get(&node).copied().unwrap_or(0)
    }

    pub fn leaders_of(&self, node: u64) -> u64 {
        self.leaders.get(&node).copied().unwrap_or(0)
    }

    /// Picks up to `count` new replicas for partition `partition` of topic `topic`, none of
    /// them in `existing`, and counts them. With `existing` empty the first one returned is
    /// the preferred leader.
    pub fn pick(
        &mut self,
        topic: Uuid,
        partition: u32,
        existing: &[u64],
        count: usize,
    ) -> Vec<u64> {
        let mut candidates: Vec<u64> = self
            .replicas
            .keys()
            .copied()
            .filter(|n| !existing.contains(n))
            .collect();
        candidates.sort_by_key(|&n| (self.replicas_of(n), tie_break(topic, partition, n)));
        candidates.truncate(count);
        if existing.is_empty() && !candidates.is_empty() {
            let leader_pos = (0..candidates.len())
                .min_by_key(|&i| {
                    let n = candidates[i];
                    (
                        self.leaders_of(n),
                        tie_break(topic, partition ^ 0x8000_0000, n),
                    )
                })
                .expect("candidates is not empty");
            candidates.swap(0, leader_pos);
            *self.leaders.get_mut(&candidates[0]).expect("a member") += 1;
        }
        for n in &candidates {
            *self.replicas.get_mut(n).expect("a member") += 1;
        }
        candidates
    }
}

/// A 64-bit mix (splitmix64's finalizer) of the topic id, partition and node: stable across
/// builds and platforms, unlike `std`'s hasher.
fn tie_break(topic: Uuid, partition: u32, node: u64) -> u64 {
    let (hi, lo) = topic.as_u64_pair();
    let mut x = hi ^ lo.rotate_left(17) ^ ((partition as u64) << 32) ^ node;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(members: &[u64], partitions: u32, rf: usize) -> (Vec<Vec<u64>>, Load) {
        let mut load = Load::new(members.iter().copied());
        let topic = Uuid::from_u128(0xfeed);
        let placed = (0..partitions)
            .map(|p| load.pick(topic, p, &[], rf))
            .collect();
        (placed, load)
    }

    #[test]
    fn balanced_replicas_and_leaders() {
        for (members, partitions, rf) in [
            (vec![1, 2, 3], 64, 3),
            (vec![1, 2, 3], 64, 1),
            (vec![1, 2, 3, 4, 5], 10, 3),
            (vec![1, 2, 3, 4, 5, 6, 7], 100, 2),
            (vec![4, 9], 3, 2),
        ] {
            let (placed, load) = place(&members, partitions, rf);
            let n = members.len() as u64;
            let total = partitions as u64 * rf as u64;
            for &m in &members {
                let r = load.replicas_of(m);
                assert!(
                    r == total / n || r == total.div_ceil(n),
                    "{members:?} {m}: {r}"
                );
                let l = load.leaders_of(m);
                let p = partitions as u64;
                assert!(
                    l == p / n || l == p.div_ceil(n),
                    "{members:?} {m} leads {l}"
                );
            }
            for replicas in placed {
                let mut d = replicas.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), rf, "distinct replicas");
            }
        }
    }

    #[test]
    fn same_inputs_same_placement() {
        assert_eq!(place(&[1, 2, 3, 4], 32, 3).0, place(&[1, 2, 3, 4], 32, 3).0);
    }

    #[test]
    fn ties_rotate_between_nodes() {
        // Single-partition topics on an empty 3-node cluster must not all lead on node 1.
        let leaders: std::collections::BTreeSet<u64> = (0..16u128)
            .map(|t| {
                let mut load = Load::new([1, 2, 3]);
                load.pick(Uuid::from_u128(t), 0, &[], 1)[0]
            })
            .collect();
        assert_eq!(leaders.len(), 3);
    }

    #[test]
    fn pick_avoids_existing_and_stops_when_none_left() {
        let mut load = Load::new([1, 2, 3]);
        let t = Uuid::from_u128(1);
        assert_eq!(load.pick(t, 0, &[1, 2], 1), vec![3]);
        assert!(load.pick(t, 0, &[1, 2, 3], 1).is_empty());
    }
}
