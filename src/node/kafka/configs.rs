//! DescribeConfigs (v1–4), for one purpose: a client that knows a node's Kafka address
//! learns the node's admin HTTP address, where the requests Kafka has no equivalent for go
//! (`tern cluster add-node` / `remove-node`: src/node/http/members.rs).
//!
//! Answered: a BROKER resource (type 4) naming this node (its id, or the empty name Kafka
//! uses for "the broker you are talking to") with the read-only config `tern.http.addr`
//! (and nothing else: tern's configuration is its `tern.toml`, not broker configs). Other
//! resource types, or another broker's id: INVALID_REQUEST for that resource, with a
//! message. An unknown key asked for is left out, as Kafka brokers do.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;

/// Kafka's ConfigResource type BROKER.
const RESOURCE_BROKER: i8 = 4;
/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;
/// Kafka's ConfigSource STATIC_BROKER_CONFIG (set at start, from the node's configuration).
const SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's ConfigType STRING.
const TYPE_STRING: i8 = 2;
/// The one config answered: the node's admin HTTP address (`--http-addr`).
pub const HTTP_ADDR_KEY: &str = "tern.http.addr";

pub fn describe(broker: &Broker, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let own = broker.setup.node_id.to_string();
    let mut response = DescribeConfigsResponse::default();
    for resource in r.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        if resource.resource_type != RESOURCE_BROKER {
            result.error_code = INVALID_REQUEST;
            result.error_message = Some(StrBytes::from_static_str(
                "tern answers DescribeConfigs for BROKER resources only (topic settings: tern list-topics, tern.toml)",
            ));
        } else if !(name.is_empty() || name == own) {
            result.error_code = INVALID_REQUEST;
            result.error_message = Some(StrBytes::from_string(format!(
                "this is node {own}; ask broker {name} itself"
            )));
        } else {
            let wanted = resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == HTTP_ADDR_KEY));
            if wanted {
                let mut c = DescribeConfigsResourceResult::default();
                c.name = StrBytes::from_static_str(HTTP_ADDR_KEY);
                c.value = Some(StrBytes::from_string(broker.setup.http_addr.to_string()));
                c.read_only = true;
                c.config_source = SOURCE_STATIC_BROKER;
                c.config_type = TYPE_STRING;
                result.configs.push(c);
            }
        }
        response.results.push(result);
    }
    response
}
