//! The CLI's client for a node's HTTP endpoints (`/v1/raft`, `/v1/cluster`,
//! `/admin/members`): hyper's HTTP/1
//! client on a glommio executor, through the same IO adapter the node's server uses
//! (`tern::node::http::io`). hyper is in the tree for the server already; a second HTTP
//! stack (ureq and its TLS) for two GET requests would not earn its place.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use http_body_util::{BodyExt, Full, Limited};
use tern::node::http::io::HyperIo;

/// Largest answer read; `/v1/cluster` of a large cluster is well below it.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing answered (connection refused, timed out, closed early).
    #[error("cannot reach the node's HTTP endpoint at {addr}: {why} (is `tern serve` running? check --http)")]
    Unreachable { addr: String, why: String },
    /// The node answered, with an error status or a body that is not what was asked.
    #[error("{addr}{path} answered {status}: {body}")]
    Refused {
        addr: String,
        path: String,
        status: u16,
        body: String,
    },
    /// A change was made but did not complete in the time given (exit 3, as a node that
    /// does not answer in time).
    #[error("{what}")]
    Incomplete { what: String },
}

/// `GET http://addr/path`, bounded by `timeout` for the whole exchange. The body of a 2xx.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, HttpError> {
    let (status, body) = request(addr, hyper::Method::GET, path, Vec::new(), timeout)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Refused {
            addr: addr.to_string(),
            path: path.to_string(),
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body)
}

/// `METHOD http://addr/path` with `body` (JSON when not empty), bounded by `timeout` for the
/// whole exchange: the status and body of whatever the node answered.
pub fn request(
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let unreachable = |why: String| HttpError::Unreachable {
        addr: addr.to_string(),
        why,
    };
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("address: {e}")))?
        .next()
        .ok_or_else(|| unreachable("address resolves to nothing".into()))?;
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| unreachable(format!("cannot start an executor: {e}")))?;
    let (status, body) = executor
        .run(async {
            let exchange = exchange(target, addr, method, path, body, timeout);
            let late = async {
                glommio::timer::sleep(timeout).await;
                Err(format!("no answer within {} s", timeout.as_secs_f64()))
            };
            future::or(exchange, late).await
        })
        .map_err(unreachable)?;
    Ok((status, body))
}

async fn exchange(
    target: SocketAddr,
    host: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let stream = glommio::net::TcpStream::connect_timeout(target, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(HyperIo(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection runs beside the request; dropped (closed) when this returns.
    let _conn = glommio::spawn_local(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if !body.is_empty() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}
