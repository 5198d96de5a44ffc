//! One blocking TCP connection to a Kafka-protocol server: framing (`i32` length, header,
//! body), correlation ids, bounded timeouts and the ApiVersions negotiation.
//!
//! Blocking std sockets keep the CLI, the tests and the bench simple: the bench gets its
//! concurrency from threads, each with its own connections. One request is in flight per
//! connection at a time; a connection that timed out or saw a bad frame is broken for good
//! (a late answer could otherwise be read as the next request's) and the caller drops it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::error::{ClientError, ClientResult};
use super::versions::{api_name, ServerVersions};

/// Bytes of the size prefix of every frame.
const FRAME_LENGTH_BYTES: usize = 4;
/// Kafka's error code for a version the server does not speak.
const UNSUPPORTED_VERSION: i16 = 35;

/// Limits of one connection. The defaults suit the CLI and the bench.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    /// Bound on the TCP connect of each resolved address.
    pub connect_timeout: Duration,
    /// Bound on writing a request and on waiting for its answer (a fetch long poll adds its
    /// `max_wait` on top).
    pub request_timeout: Duration,
    /// Largest response accepted; a bigger length prefix is refused before allocating.
    pub response_bytes_max: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_id: "tern-client".to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            response_bytes_max: 64 << 20,
        }
    }
}

/// A negotiated connection to one server.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
    options: ConnectOptions,
    correlation_id_next: i32,
    versions: ServerVersions,
    /// Set once a timeout or a bad frame leaves the stream at an unknown position.
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (HOST:PORT), trying each resolved address within the connect
    /// timeout, and negotiates API versions.
    pub fn open(addr: &str, options: &ConnectOptions) -> ClientResult<Connection> {
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        if resolved.is_empty() {
            return Err(ClientError::Resolve {
                addr: addr.to_string(),
            });
        }
        let mut last_error = None;
        let mut stream = None;
        for sa in resolved {
            match TcpStream::connect_timeout(&sa, options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    source: last_error
                        .unwrap_or_else(|| std::io::Error::other("no address to connect to")),
                })
            }
        };
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_write_timeout(Some(options.request_timeout))
            .map_err(io)?;
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            options: options.clone(),
            correlation_id_next: 0,
            versions: ServerVersions::default(),
            broken: false,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn versions(&self) -> &ServerVersions {
        &self.versions
    }

    /// ApiVersions at our newest version; a server that does not speak it answers in v0 with
    /// UNSUPPORTED_VERSION and its own range, and we ask again at the newest common version.
    fn negotiate(&mut self) -> ClientResult<()> {
        let ours = super::versions::client_range(ApiKey::ApiVersions)
            .map(|r| r.max)
            .unwrap_or(0);
        let request = api_versions_request();
        let body = self.round_trip(&request, ours, self.options.request_timeout)?;
        let response = match decode_response::<ApiVersionsRequest>(&self.addr, body.clone(), ours) {
            Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
            // The v0 fallback: the error answer is encoded at v0 whatever we asked.
            _ => decode_response::<ApiVersionsRequest>(&self.addr, body, 0)?,
        };
        let response = if response.error_code == UNSUPPORTED_VERSION {
            let theirs = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map(|k| k.max_version)
                .unwrap_or(0)
                .clamp(0, ours);
            let body = self.round_trip(&request, theirs, self.options.request_timeout)?;
            decode_response::<ApiVersionsRequest>(&self.addr, body, theirs)?
        } else {
            response
        };
        if response.error_code != 0 {
            return Err(ClientError::Server {
                api: "ApiVersions",
                code: response.error_code,
                topic: None,
                partition: None,
                message: None,
            });
        }
        record_versions(&mut self.versions, &response);
        Ok(())
    }

    /// The version of `R` to use with this server.
    pub fn version_of<R: Request>(&self) -> ClientResult<i16> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| ClientError::Encode {
            api: api_name(R::KEY),
            what: "unknown API key".to_string(),
        })?;
        self.versions
            .choose(key)
            .map_err(|(ours, theirs)| ClientError::UnsupportedApi {
                addr: self.addr.clone(),
                api: api_name(R::KEY),
                ours,
                theirs,
            })
    }

    /// Sends `request` at the negotiated version and waits for its answer.
    pub fn call<R: Request>(&mut self, request: &R) -> ClientResult<R::Response> {
        self.call_waiting(request, Duration::ZERO)
    }

    /// [`Connection::call`] for a request the server may hold for `server_wait` (a fetch long
    /// poll): the answer is awaited that much longer.
    pub fn call_waiting<R: Request>(
        &mut self,
        request: &R,
        server_wait: Duration,
    ) -> ClientResult<R::Response> {
        let version = self.version_of::<R>()?;
        let body = self.round_trip(
            request,
            version,
            self.options.request_timeout.saturating_add(server_wait),
        )?;
        decode_response::<R>(&self.addr, body, version).inspect_err(|_| self.broken = true)
    }

    /// Sends a request the server does not answer (Produce with acks=0).
    pub fn send_only<R: Request>(&mut self, request: &R) -> ClientResult<()> {
        let version = self.version_of::<R>()?;
        self.write_request(request, version)?;
        Ok(())
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> ClientResult<i32> {
        if self.broken {
            return Err(ClientError::Io {
                addr: self.addr.clone(),
                source: std::io::Error::other("connection was abandoned after an earlier error"),
            });
        }
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let frame = encode_request(request, version, correlation_id, &self.options.client_id)?;
        if let Err(source) = self.stream.write_all(&frame) {
            self.broken = true;
            return Err(self.io_error(source, R::KEY));
        }
        Ok(correlation_id)
    }

    /// Writes the request and reads one answer frame; returns the body after the response
    /// header, whose correlation id has been checked.
    fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> ClientResult<Bytes> {
        let correlation_id = self.write_request(request, version)?;
        let result = self.read_answer::<R>(version, correlation_id, timeout);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn read_answer<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
        timeout: Duration,
    ) -> ClientResult<Bytes> {
        let api = api_name(R::KEY);
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|source| self.io_error(source, R::KEY))?;
        let mut length = [0u8; FRAME_LENGTH_BYTES];
        self.read_exact(&mut length, R::KEY, timeout)?;
        let bytes = i32::from_be_bytes(length);
        if bytes < 0 || bytes as usize > self.options.response_bytes_max {
            return Err(ClientError::ResponseTooLarge {
                addr: self.addr.clone(),
                api,
                bytes: bytes as u32 as u64,
                limit: self.options.response_bytes_max,
            });
        }
        let mut body = vec![0u8; bytes as usize];
        self.read_exact(&mut body, R::KEY, timeout)?;
        let mut body = Bytes::from(body);
        let header_version = R::Response::header_version(version);
        let header =
            ResponseHeader::decode(&mut body, header_version).map_err(|e| ClientError::Decode {
                addr: self.addr.clone(),
                api,
                what: format!("response header: {e}"),
            })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                addr: self.addr.clone(),
                api,
                expected: correlation_id,
                got: header.correlation_id,
            });
        }
        Ok(body)
    }

    fn read_exact(&mut self, buf: &mut [u8], key: i16, timeout: Duration) -> ClientResult<()> {
        self.stream.read_exact(buf).map_err(|source| {
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ClientError::Timeout {
                    addr: self.addr.clone(),
                    api: api_name(key),
                    timeout,
                }
            } else {
                self.io_error(source, key)
            }
        })
    }

    fn io_error(&self, source: std::io::Error, key: i16) -> ClientError {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return ClientError::Timeout {
                addr: self.addr.clone(),
                api: api_name(key),
                timeout: self.options.request_timeout,
            };
        }
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

fn api_versions_request() -> ApiVersionsRequest {
    let mut request = ApiVersionsRequest::default();
    request.client_software_name = StrBytes::from_static_str("tern-client");
    request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
    request
}

fn record_versions(versions: &mut ServerVersions, response: &ApiVersionsResponse) {
    for k in &response.api_keys {
        versions.insert(k.api_key, k.min_version, k.max_version);
    }
}

/// One request frame: `i32` length, request header, body.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> ClientResult<Bytes> {
    let api = api_name(R::KEY);
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let header_version = R::header_version(version);
    let mut buf = BytesMut::new();
    buf.put_i32(0); // length, filled below
    header
        .encode(&mut buf, header_version)
        .map_err(|e| ClientError::Encode {
            api,
            what: e.to_string(),
        })?;
    request
        .encode(&mut buf, version)
        .map_err(|e| ClientError::Encode {
            api,
            what: e.to_string(),
        })?;
    let length =
        i32::try_from(buf.len() - FRAME_LENGTH_BYTES).map_err(|_| ClientError::Encode {
            api,
            what: "request larger than 2 GiB".to_string(),
        })?;
    buf[..FRAME_LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response body (after its header) at `version`. The only decoder of server
/// answers: the property test feeds it random bytes.
pub fn decode_response<R: Request>(
    addr: &str,
    mut body: Bytes,
    version: i16,
) -> ClientResult<R::Response> {
    R::Response::decode(&mut body, version).map_err(|e| ClientError::Decode {
        addr: addr.to_string(),
        api: api_name(R::KEY),
        what: e.to_string(),
    })
}
