//! Binding listeners without silently sharing a port.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT, so a second tern process started on the
//! same address would bind too, and the kernel would spread connections between the two. So
//! every listener first binds a plain std listener (no SO_REUSEPORT) to the address: if any
//! socket listens there, that fails with "address in use" and start-up is refused. The probe is
//! then released and the real listener bound. A process that binds in the gap between the two
//! is not caught; start-up is the only time this matters, and two nodes racing to start on the
//! same address within microseconds is not a case worth a lock file. The peer, Kafka and HTTP
//! listeners all go through [`bind_glommio_listener`] (or [`bind_std_listener`]).

use std::io;
use std::net::{SocketAddr, TcpListener};

use crate::error::ListenError;

/// Binds a std listener on `addr` (SO_REUSEADDR as std sets it, never SO_REUSEPORT), so it
/// fails if another socket already listens there.
pub fn bind_std_listener(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::AddrInUse { addr, source },
        _ => ListenError::Bind { addr, source },
    })
}

/// Checks that nothing listens on `addr` (see the module doc). With port 0 it checks nothing
/// useful and returns the port the kernel picked, which the caller may bind next.
pub fn ensure_addr_free(addr: SocketAddr) -> Result<SocketAddr, ListenError> {
    let probe = bind_std_listener(addr)?;
    probe
        .local_addr()
        .map_err(|source| ListenError::Bind { addr, source })
}

/// Binds glommio's listener on `addr` after checking that no other process listens there.
/// Must run on a glommio executor.
pub fn bind_glommio_listener(addr: SocketAddr) -> Result<glommio::net::TcpListener, ListenError> {
    let free = ensure_addr_free(addr)?;
    glommio::net::TcpListener::bind(free).map_err(|err| ListenError::Bind {
        addr,
        source: io::Error::other(err.to_string()),
    })
}
