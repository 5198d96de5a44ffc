//! One client connection: read a size-prefixed request, answer it, repeat. One request at a
//! time ([`super::INFLIGHT_REQUESTS_PER_CONNECTION_MAX`]), so answers leave in request order.
//! The size field is checked before the body is read: a request over
//! [`super::REQUEST_BYTES_MAX`] closes the connection without being read into memory. A
//! request that does not decode closes the connection with a log line, as Kafka does.

use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::{debug, warn};

use super::broker::Broker;
use super::dispatch::{self, Outcome};
use super::REQUEST_BYTES_MAX;

/// Smallest request: api key, api version, correlation id, client id length.
pub const REQUEST_BYTES_MIN: usize = 10;

pub async fn serve(mut stream: TcpStream, broker: Rc<Broker>) {
    let peer = stream.peer_addr().ok();
    // Kafka clients send small requests and wait for each answer: no Nagle delay.
    let _ = stream.set_nodelay(true);
    loop {
        let mut size = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut size).await {
            debug!(?peer, "kafka connection closed: {e}");
            return;
        }
        let size = i32::from_be_bytes(size);
        if size < REQUEST_BYTES_MIN as i32 || size as usize > REQUEST_BYTES_MAX {
            warn!(
                ?peer,
                size,
                limit = REQUEST_BYTES_MAX,
                "kafka request refused (size out of bounds); closing the connection"
            );
            return;
        }
        let mut body = BytesMut::zeroed(size as usize);
        if let Err(e) = stream.read_exact(&mut body).await {
            debug!(?peer, "kafka connection closed mid-request: {e}");
            return;
        }
        match dispatch::handle(&broker, body.freeze()).await {
            Outcome::Respond(bytes) => {
                if let Err(e) = stream.write_all(&bytes).await {
                    debug!(?peer, "kafka connection closed while answering: {e}");
                    return;
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close(why) => {
                warn!(
                    ?peer,
                    "kafka request refused, closing the connection: {why}"
                );
                return;
            }
        }
    }
}
