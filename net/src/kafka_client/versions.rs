//! Which version of each Kafka API this client speaks, and the choice of version against a
//! server's ApiVersions answer.
//!
//! The client fills only fields that exist in these ranges (names, not topic ids: Fetch ≤ 12,
//! DeleteTopics ≤ 5, Metadata reads names); the newest version both sides speak is used.

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// The versions this client speaks, per API (intersected with the crate's own ranges).
pub fn client_range(key: ApiKey) -> Option<VersionRange> {
    let (min, max) = match key {
        ApiKey::ApiVersions => (0, 3),
        ApiKey::Metadata => (4, 12),
        ApiKey::Produce => (3, 11),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 5),
        ApiKey::InitProducerId => (0, 4),
        ApiKey::AlterPartitionReassignments => (0, 1),
        ApiKey::DescribeConfigs => (1, 4),
        _ => return None,
    };
    Some(key.valid_versions().intersect(&VersionRange { min, max }))
}

/// A short name for messages and errors.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::DeleteTopics) => "DeleteTopics",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        Ok(ApiKey::AlterPartitionReassignments) => "AlterPartitionReassignments",
        Ok(ApiKey::DescribeConfigs) => "DescribeConfigs",
        _ => "a Kafka request",
    }
}

/// What a server said it supports: api key → version range.
#[derive(Debug, Clone, Default)]
pub struct ServerVersions {
    ranges: HashMap<i16, VersionRange>,
}

impl ServerVersions {
    pub fn insert(&mut self, key: i16, min: i16, max: i16) {
        self.ranges.insert(key, VersionRange { min, max });
    }

    pub fn get(&self, key: i16) -> Option<VersionRange> {
        self.ranges.get(&key).copied()
    }

    /// The newest version both sides speak, or `Err((ours, theirs))` as text for the error.
    pub fn choose(&self, key: ApiKey) -> Result<i16, (String, String)> {
        let ours = client_range(key).unwrap_or(VersionRange { min: 1, max: 0 });
        let Some(theirs) = self.get(key as i16) else {
            return Err((ours.to_string(), "none".to_string()));
        };
        let both = ours.intersect(&theirs);
        if both.is_empty() {
            return Err((ours.to_string(), theirs.to_string()));
        }
        Ok(both.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_takes_the_newest_common_version() {
        let mut v = ServerVersions::default();
        v.insert(ApiKey::Fetch as i16, 4, 17);
        v.insert(ApiKey::Produce as i16, 0, 2);
        assert_eq!(v.choose(ApiKey::Fetch), Ok(12));
        assert!(v.choose(ApiKey::Produce).is_err(), "below our minimum");
        assert!(v.choose(ApiKey::Metadata).is_err(), "not advertised");
    }
}
