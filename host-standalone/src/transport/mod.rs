//! Connections, below gRPC: accepting, TLS, the per-connection policy, and the budget of
//! request bytes in flight.
//!
//! TLS is done here rather than by tonic so that [`http2::GuardedIo`] sees the plaintext
//! HTTP/2 frames (keepalive policing and idle detection read them); tonic still reads the
//! client certificates through [`tonic::transport::server::Connected`].

pub mod budget;
pub mod http2;
pub mod tls;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

pub use budget::RequestBudget;
pub use http2::{ConnectionPolicy, GuardedIo};

/// Accepted connections waiting for the server to pick them up.
const ACCEPT_QUEUE: usize = 64;

/// HTTP/2 flow control. A call waiting for the request budget leaves up to one stream window
/// unread, and unread data holds the connection's window too (h2 releases both together): the
/// connection window must exceed what all of a connection's streams can leave unread, or calls
/// waiting for the budget would starve the very calls holding it.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Calls open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Room for every stream's window, plus as much again for the calls being read.
pub const CONNECTION_WINDOW: u32 = 2 * MAX_CONCURRENT_STREAMS * STREAM_WINDOW;

/// The connections of `listener`, each through `handshake` (nothing, or TLS) within the
/// policy's handshake timeout, then guarded by `policy`. Handshakes run concurrently, so a
/// slow client delays only itself. Dropping the stream stops accepting and closes the listener.
pub fn incoming<T, H, F>(
    listener: TcpListener,
    policy: Arc<ConnectionPolicy>,
    handshake: H,
) -> ReceiverStream<io::Result<GuardedIo<T>>>
where
    T: Send + 'static,
    H: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<T>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let accepted_at = Instant::now();
            let deadline = accepted_at + policy.handshake_timeout;
            let handshake = handshake(tcp);
            let (sender, policy) = (sender.clone(), Arc::clone(&policy));
            tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, handshake).await {
                    Ok(Ok(io)) => {
                        let _ = sender.send(Ok(GuardedIo::new(io, policy, accepted_at))).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, error = %err, "connection handshake failed"),
                    Err(_) => tracing::debug!(
                        %peer,
                        timeout = ?policy.handshake_timeout,
                        "connection closed: no TLS handshake within the handshake timeout"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
