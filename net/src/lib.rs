//! tern-net: wire format, peer transport, client library and HTTP endpoints.
//!
//! Empty for now: the node issue fills it in.
#![forbid(unsafe_code)]
