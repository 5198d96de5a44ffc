//! The accept loop and the bounds on each connection: at most [`HTTP_CONNECTIONS_MAX`] open,
//! a head of at most [`HTTP_HEAD_BYTES_MAX`] (hyper answers 431 past it, 400 to what does not
//! parse), at most [`HTTP_CONNECTION_TIME_MAX`] per connection (a glommio timer races the
//! connection and drops it, which closes the socket).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use hyper::service::service_fn;
use tracing::{debug, info, warn};

use super::io::HyperIo;
use super::routes;
use super::{HttpSetup, HTTP_CONNECTIONS_MAX, HTTP_CONNECTION_TIME_MAX, HTTP_HEAD_BYTES_MAX};

/// Binds `setup.addr` (checked free by the caller) and serves it until the returned task is
/// dropped. Must run on a glommio executor.
pub fn spawn(setup: HttpSetup) -> Result<(glommio::Task<()>, SocketAddr), String> {
    let addr = setup.addr;
    let listener = glommio::net::TcpListener::bind(addr)
        .map_err(|e| format!("http listener on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("http listener on {addr}: {e}"))?;
    info!(addr = %bound, "http listener bound (/health /ready /metrics /v1/raft /v1/cluster)");
    let setup = Rc::new(setup);
    let open = Rc::new(Cell::new(0usize));
    let task = glommio::spawn_local(async move {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!("http accept failed: {e}");
                    // Out of descriptors, most likely: give the others a moment to close.
                    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let peer = stream.peer_addr().ok();
            if open.get() >= HTTP_CONNECTIONS_MAX {
                warn!(
                    ?peer,
                    limit = HTTP_CONNECTIONS_MAX,
                    "http connection refused: too many connections"
                );
                continue;
            }
            open.set(open.get() + 1);
            let open = open.clone();
            let setup = setup.clone();
            glommio::spawn_local(async move {
                serve_connection(stream, setup, peer).await;
                open.set(open.get() - 1);
            })
            .detach();
        }
    });
    Ok((task, bound))
}

async fn serve_connection(
    stream: glommio::net::TcpStream,
    setup: Rc<HttpSetup>,
    peer: Option<SocketAddr>,
) {
    let service = service_fn(move |req| routes::route(setup.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(HTTP_HEAD_BYTES_MAX).keep_alive(true);
    let conn = builder.serve_connection(HyperIo(stream), service);
    let served = async {
        match conn.await {
            Ok(()) => debug!(?peer, "http connection closed"),
            Err(e) => debug!(?peer, "http connection ended: {e}"),
        }
    };
    let expired = async {
        glommio::timer::sleep(HTTP_CONNECTION_TIME_MAX).await;
        debug!(
            ?peer,
            limit_s = HTTP_CONNECTION_TIME_MAX.as_secs(),
            "http connection closed: time limit"
        );
    };
    future::or(served, expired).await;
}
