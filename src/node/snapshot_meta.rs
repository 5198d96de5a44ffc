//! The bytes tern stores with a group's snapshot point in the engine (`SnapshotMeta` record):
//! the configuration at the snapshot and the state machine's snapshot data.
//!
//! Encoding (little-endian):
//! `{ u32 magic "TRNS" | u16 version | u16 reserved | u32 crc32c (of everything after it) |
//!    u32 conf_len | conf (ConfState::encode) | u32 data_len | data }`

use tern_raft::message::ConfState;

const MAGIC: u32 = u32::from_le_bytes(*b"TRNS");
const VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub conf: ConfState,
    pub data: Vec<u8>,
}

impl GroupSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let conf = self.conf.encode();
        let mut body = Vec::with_capacity(8 + conf.len() + self.data.len());
        body.extend_from_slice(&(conf.len() as u32).to_le_bytes());
        body.extend_from_slice(&conf);
        body.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.data);
        super::meta_record::frame(MAGIC, VERSION, &body)
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupSnapshot, String> {
        let body = super::meta_record::unframe(bytes, MAGIC, VERSION)?;
        let mut cur = body;
        let mut take = |what: &str| -> Result<&[u8], String> {
            let (len, rest) = cur
                .split_first_chunk::<4>()
                .ok_or_else(|| format!("{what} length missing"))?;
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len {
                return Err(format!("{what} truncated"));
            }
            let (field, rest) = rest.split_at(len);
            cur = rest;
            Ok(field)
        };
        let conf = take("configuration")?;
        let conf = ConfState::decode(conf).ok_or("configuration does not decode")?;
        let data = take("data")?.to_vec();
        if !cur.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(GroupSnapshot { conf, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let s = GroupSnapshot {
            conf: ConfState::with_voters(&[1, 2, 3]),
            data: b"state".to_vec(),
        };
        let bytes = s.encode();
        assert_eq!(GroupSnapshot::decode(&bytes), Ok(s));
        for cut in 0..bytes.len() {
            assert!(GroupSnapshot::decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(GroupSnapshot::decode(&bad).is_err(), "flip at {i}");
        }
    }
}
