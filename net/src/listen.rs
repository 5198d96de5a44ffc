//! Binding listeners without silently sharing a port.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT, so a second tern process started on the
//! same address would bind too, and the kernel would spread connections between the two. So
//! every listener first binds a plain std listener (no SO_REUSEPORT) to the address: if any
//! socket listens there, that fails with "address in use" and start-up is refused (unless a
//! connect shows that nothing listens: see [`ensure_addr_free`]). The probe is then released
//! and the real listener bound. A process that binds in the gap between the two
//! is not caught; start-up is the only time this matters, and two nodes racing to start on the
//! same address within microseconds is not a case worth a lock file. The peer, Kafka and HTTP
//! listeners all go through [`bind_glommio_listener`] (or [`bind_std_listener`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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
///
/// The probe also fails while connections of a previous process on this port linger
/// (TIME_WAIT, FIN_WAIT after a crash: a client was connected when the node was SIGKILLed).
/// Those sockets were accepted from glommio's listener, so they carry SO_REUSEPORT but not
/// SO_REUSEADDR, and Linux refuses a bind without SO_REUSEPORT next to them for up to a
/// minute, while glommio's own bind would succeed. So "in use" is believed only if a connect
/// to the address is accepted, i.e. a socket really listens there; a refused connect means
/// the port is held by leftovers only and the node may start (found by tests/crash_kill.rs:
/// a node restarted right after a SIGKILL refused to start).
pub fn ensure_addr_free(addr: SocketAddr) -> Result<SocketAddr, ListenError> {
    match bind_std_listener(addr) {
        Ok(probe) => probe
            .local_addr()
            .map_err(|source| ListenError::Bind { addr, source }),
        Err(ListenError::AddrInUse { source, .. }) => {
            if addr.port() != 0 && !something_listens(addr) {
                Ok(addr)
            } else {
                Err(ListenError::AddrInUse { addr, source })
            }
        }
        Err(e) => Err(e),
    }
}

/// Bound on the connect of [`something_listens`]: the address is a local one, so an answer
/// (accepted or refused) comes at once; no answer within it counts as "listens".
const LISTEN_CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a socket listens on `addr` (an unspecified address is checked on loopback):
/// anything but a refused connect counts as yes, so a doubt refuses the start.
fn something_listens(addr: SocketAddr) -> bool {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    match TcpStream::connect_timeout(&target, LISTEN_CHECK_CONNECT_TIMEOUT) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::ConnectionRefused,
    }
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
