//! TCP_NODELAY on the pool's PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP sockets without TCP_NODELAY (sqlx#4335, fixed upstream after the
//! 0.9.0 release), so a statement bigger than one segment (a get-many of a few thousand keys,
//! a group's flush) waits for PostgreSQL's delayed ACK: about 40 ms each. Measured here: a
//! QueryTasks page of 1,000 took 66 ms over TCP, 19 ms over the Unix socket. sqlx exposes no
//! socket, so the connection asks the server for its client port and the socket of this
//! process bound to that port gets the option. Remove this module once sqlx sets it itself.

use std::io;

use sqlx::PgConnection;

/// Sets TCP_NODELAY on `conn`'s socket; `Ok(false)` when the connection is not over TCP (a Unix
/// socket has no Nagle delay) or its socket was not found.
pub async fn set_on(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let Some(port) = client_port(conn).await? else {
        return Ok(false);
    };
    Ok(with_socket_of_local_port(port, |socket| socket.set_tcp_nodelay(true))
        .unwrap_or_else(|err| {
            tracing::debug!(%err, "could not set TCP_NODELAY on a database connection");
            None
        })
        .is_some())
}

/// Whether `conn`'s socket has TCP_NODELAY (`None`: not over TCP, or not found).
pub async fn is_set_on(conn: &mut PgConnection) -> Result<Option<bool>, sqlx::Error> {
    let Some(port) = client_port(conn).await? else {
        return Ok(None);
    };
    Ok(with_socket_of_local_port(port, |socket| socket.tcp_nodelay()).ok().flatten())
}

/// The local port of `conn`'s socket as the server sees it (`None` over a Unix socket).
async fn client_port(conn: &mut PgConnection) -> Result<Option<u16>, sqlx::Error> {
    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()").fetch_one(&mut *conn).await?;
    Ok(port.and_then(|p| u16::try_from(p).ok()))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn with_socket_of_local_port<T>(
    port: u16,
    f: impl FnOnce(&socket2::SockRef<'_>) -> io::Result<T>,
) -> io::Result<Option<T>> {
    use std::os::fd::{BorrowedFd, RawFd};

    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for the getsockname/getsockopt/setsockopt
        // calls below and never closed here. If another thread closes it meanwhile, the calls
        // fail (EBADF) or see whatever reuses the number, which is changed only if it is a TCP
        // socket bound to `port`: the one socket this process has there.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let bound_here = socket.local_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a.port() == port);
        if bound_here && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM) {
            return f(&socket).map(Some);
        }
    }
    Ok(None)
}

#[cfg(not(target_os = "linux"))]
fn with_socket_of_local_port<T>(
    _port: u16,
    _f: impl FnOnce(&socket2::SockRef<'_>) -> io::Result<T>,
) -> io::Result<Option<T>> {
    Ok(None)
}
