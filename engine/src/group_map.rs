//! [`GroupMap`]: the hash map the engine keys by Raft group id, with a hasher made for `u64`
//! ids. The group table and the accepted bounds are looked up several times per appended
//! entry (a node's Raft storage asks for terms and bounds on every step), and the standard
//! SipHash costs ~130 instructions a lookup there. Group ids are assigned by the node's
//! controller, never chosen by a client, so the flooding resistance SipHash buys is not needed;
//! a multiply-and-fold spreads sequential ids over every bit the table uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from group id to `V`.
pub type GroupMap<V> = HashMap<u64, V, BuildHasherDefault<GroupIdHasher>>;

/// Hashes one `u64` with a 64 x 64 -> 128-bit multiply by an odd constant (the golden ratio's
/// bits), folding the high half into the low one. Other input (not used by the engine's maps)
/// is folded in 8 bytes at a time, so any key still hashes correctly.
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupIdHasher {
    state: u64,
}

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl GroupIdHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(MULTIPLIER);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for GroupIdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.mix(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_the_low_and_high_bits() {
        let build = BuildHasherDefault::<GroupIdHasher>::default();
        let hashes: Vec<u64> = (0..1024u64).map(|id| build.hash_one(id)).collect();
        // hashbrown picks the bucket from the low bits and a tag from the top 7 bits.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 600, "{} distinct low-bit buckets", low.len());
        assert_eq!(top.len(), 128, "every top-7-bit tag is used");
    }

    #[test]
    fn the_map_works_as_a_map() {
        let mut m: GroupMap<u64> = GroupMap::default();
        for id in 0..10_000u64 {
            m.insert(id * 7, id);
        }
        for id in 0..10_000u64 {
            assert_eq!(m.get(&(id * 7)), Some(&id));
            assert_eq!(m.get(&(id * 7 + 1)), None);
        }
    }
}
