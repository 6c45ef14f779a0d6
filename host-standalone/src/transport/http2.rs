//! What hyper's HTTP/2 server does not police, watched on the plaintext byte stream of one
//! connection: the handshake deadline, the idle timeout and grpc-go's keepalive enforcement
//! policy (a client that pings too often gets GOAWAY `ENHANCE_YOUR_CALM` / `too_many_pings`).
//!
//! [`GuardedIo`] sits between the transport (TCP or TLS) and hyper. It reads the frame headers
//! going both ways (9 bytes each, the payloads are only counted), keeps the set of open
//! streams, and when a rule is broken writes its own GOAWAY at a frame boundary of the server's
//! output, then closes the connection. h2 never learns of that GOAWAY: it sees the connection
//! end, as it would after a network failure.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// The client's connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_PING: u8 = 0x6;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// grpc-go's `maxPingStrikes`: the third early ping closes the connection.
const MAX_PING_STRIKES: u32 = 2;
/// grpc-go's interval expected between pings when there is no stream and they are not permitted.
const PING_INTERVAL_WITHOUT_STREAM: Duration = Duration::from_secs(2 * 60 * 60);

/// The rules of every connection.
#[derive(Debug, Clone)]
pub struct ConnectionPolicy {
    /// Time allowed from accept to the end of the handshake: TLS, then the client preface and
    /// its first frame.
    pub handshake_timeout: Duration,
    /// A connection without a stream for this long gets GOAWAY and is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Keepalive enforcement: least time between two client pings (grpc-go's `MinTime`).
    pub ping_min_time: Duration,
    /// Keepalive enforcement: pings allowed while no stream is open (`PermitWithoutStream`).
    pub ping_without_stream: bool,
}

/// Where a byte stream is in its sequence of frames.
#[derive(Debug)]
struct FrameScanner {
    /// Preface bytes still to come (client side only).
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
}

/// A frame header, as read off the wire.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameScanner {
    fn new(preface_len: usize) -> Self {
        Self { preface_left: preface_len, header: [0; FRAME_HEADER_LEN], header_len: 0, payload_left: 0 }
    }

    fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }

    /// Bytes that can pass before the next frame boundary is reached (or the next header read).
    fn until_boundary(&self) -> usize {
        if self.preface_left > 0 {
            self.preface_left
        } else if self.header_len > 0 {
            FRAME_HEADER_LEN - self.header_len
        } else {
            self.payload_left
        }
    }

    /// Advances over `data`, reporting each complete frame header.
    fn scan(&mut self, mut data: &[u8], mut on_header: impl FnMut(FrameHeader)) {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len());
                self.preface_left -= n;
                data = &data[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
            } else {
                let n = (FRAME_HEADER_LEN - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    let h = self.header;
                    self.payload_left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    on_header(FrameHeader { kind: h[3], flags: h[4], stream });
                }
            }
        }
    }
}

/// Why the server is ending a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    TooManyPings,
    Idle,
}

/// What the frames seen so far say about the connection.
#[derive(Debug)]
struct ConnectionState {
    policy: Arc<ConnectionPolicy>,
    /// The client preface and first frame header have been read.
    handshaken: bool,
    open_streams: HashSet<u32>,
    last_client_stream: u32,
    /// No stream open since.
    idle_since: Instant,
    last_ping: Option<Instant>,
    ping_strikes: u32,
    /// The server sent headers or data since the last ping (grpc-go's `resetPingStrikes`).
    reset_ping_strikes: bool,
    ending: Option<Ending>,
}

impl ConnectionState {
    fn new(policy: Arc<ConnectionPolicy>) -> Self {
        Self {
            policy,
            handshaken: false,
            open_streams: HashSet::new(),
            last_client_stream: 0,
            idle_since: Instant::now(),
            last_ping: None,
            ping_strikes: 0,
            reset_ping_strikes: false,
            ending: None,
        }
    }

    fn client_frame(&mut self, frame: FrameHeader) {
        self.handshaken = true;
        match frame.kind {
            FRAME_HEADERS if frame.stream > self.last_client_stream => {
                self.last_client_stream = frame.stream;
                self.open_streams.insert(frame.stream);
            }
            FRAME_RST_STREAM => self.stream_closed(frame.stream),
            FRAME_PING if frame.flags & FLAG_ACK == 0 => self.ping(),
            _ => {}
        }
    }

    fn server_frame(&mut self, frame: FrameHeader) {
        match frame.kind {
            FRAME_HEADERS | FRAME_DATA => {
                self.reset_ping_strikes = true;
                if frame.flags & FLAG_END_STREAM != 0 {
                    self.stream_closed(frame.stream);
                }
            }
            FRAME_RST_STREAM => self.stream_closed(frame.stream),
            _ => {}
        }
    }

    fn stream_closed(&mut self, stream: u32) {
        if self.open_streams.remove(&stream) && self.open_streams.is_empty() {
            self.idle_since = Instant::now();
        }
    }

    /// grpc-go's `handlePing` policing.
    fn ping(&mut self) {
        let now = Instant::now();
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset_ping_strikes) {
            self.ping_strikes = 0;
            return;
        }
        let least_interval = if self.open_streams.is_empty() && !self.policy.ping_without_stream {
            PING_INTERVAL_WITHOUT_STREAM
        } else {
            self.policy.ping_min_time
        };
        if last.is_some_and(|last| last + least_interval > now) {
            self.ping_strikes += 1;
        }
        if self.ping_strikes > MAX_PING_STRIKES && self.ending.is_none() {
            self.ending = Some(Ending::TooManyPings);
        }
    }

    /// The next instant a timer must fire at, if any.
    fn deadline(&self, handshake_deadline: Instant) -> Option<Instant> {
        if !self.handshaken {
            Some(handshake_deadline)
        } else if self.open_streams.is_empty() && self.ending.is_none() {
            self.policy.idle_timeout.map(|idle| self.idle_since + idle)
        } else {
            None
        }
    }
}

/// The GOAWAY frame of `ending`.
fn goaway_frame(ending: Ending, last_stream: u32) -> Vec<u8> {
    let (code, debug): (u32, &[u8]) = match ending {
        Ending::TooManyPings => (ENHANCE_YOUR_CALM, b"too_many_pings"),
        Ending::Idle => (NO_ERROR, b"max_idle"),
    };
    let len = 8 + debug.len();
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + len);
    #[allow(clippy::cast_possible_truncation)] // 8 + a short literal
    frame.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, FRAME_GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(debug);
    frame
}

/// A GOAWAY on its way out.
#[derive(Debug)]
struct GoAway {
    frame: Vec<u8>,
    written: usize,
}

/// The plaintext stream of one HTTP/2 connection, under [`ConnectionPolicy`].
#[derive(Debug)]
pub struct GuardedIo<T> {
    inner: T,
    state: ConnectionState,
    from_client: FrameScanner,
    to_client: FrameScanner,
    handshake_deadline: Instant,
    timer: Pin<Box<Sleep>>,
    goaway: Option<GoAway>,
    /// The GOAWAY is out and the transport shut: reads end, writes fail.
    closed: bool,
}

impl<T> GuardedIo<T> {
    /// Guards `inner`, accepted at `accepted`.
    pub fn new(inner: T, policy: Arc<ConnectionPolicy>, accepted: Instant) -> Self {
        let handshake_deadline = accepted + policy.handshake_timeout;
        Self {
            inner,
            state: ConnectionState::new(policy),
            from_client: FrameScanner::new(PREFACE_LEN),
            to_client: FrameScanner::new(0),
            handshake_deadline,
            timer: Box::pin(tokio::time::sleep_until(handshake_deadline)),
            goaway: None,
            closed: false,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Fires the handshake and idle timers. An unfinished handshake is an error (the connection
    /// just ends); an idle connection is told why with a GOAWAY.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while let Some(deadline) = self.state.deadline(self.handshake_deadline) {
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            if !self.state.handshaken {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake within the handshake timeout",
                ));
            }
            tracing::debug!(idle = ?self.state.policy.idle_timeout, "closing an idle connection");
            self.state.ending = Some(Ending::Idle);
        }
        Ok(())
    }

    /// Ready when writes may go on; an error once the connection is closed, after sending the
    /// GOAWAY that is due first.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Err(Self::closed_error()));
        }
        if self.goaway_due() {
            ready!(self.poll_goaway(cx))?;
            return Poll::Ready(Err(Self::closed_error()));
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the pending GOAWAY (the server's output is at a frame boundary), flushes, and
    /// shuts the transport.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.goaway.is_none()
            && let Some(ending) = self.state.ending
        {
            if ending == Ending::TooManyPings {
                tracing::info!("client pings too often for the keepalive policy: GOAWAY too_many_pings");
            }
            self.goaway = Some(GoAway { frame: goaway_frame(ending, self.state.last_client_stream), written: 0 });
        }
        if let Some(goaway) = &mut self.goaway {
            while goaway.written < goaway.frame.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &goaway.frame[goaway.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                goaway.written += n;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            // The peer may be gone already; the connection ends either way.
            let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
            self.closed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether a GOAWAY must go out before anything else the server writes.
    fn goaway_due(&self) -> bool {
        self.state.ending.is_some() && self.to_client.at_boundary()
    }

    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed by the server's connection policy")
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        this.poll_timers(cx)?;
        if this.state.ending.is_some() {
            // Nothing more is read once the connection is ending: a stream opened now would
            // be past the GOAWAY's last stream id. A server write still mid-frame completes
            // first (h2 is flushing it, its waker is registered).
            if this.to_client.at_boundary() {
                ready!(this.poll_goaway(cx))?;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let state = &mut this.state;
        this.from_client.scan(&buf.filled()[before..], |frame| state.client_frame(frame));
        if state.ending.is_some() {
            // Let the next poll send the GOAWAY even if the server has nothing to write.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_open(cx))?;
        // While ending, write no further than the current frame so the GOAWAY can follow it.
        let limit = if this.state.ending.is_some() { this.to_client.until_boundary() } else { buf.len() };
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..limit.min(buf.len())]))?;
        let state = &mut this.state;
        this.to_client.scan(&buf[..n], |frame| state.server_frame(frame));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closed || self.state.ending.is_some() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        let state = &mut this.state;
        for slice in bufs {
            if left == 0 {
                break;
            }
            let taken = left.min(slice.len());
            this.to_client.scan(&slice[..taken], |frame| state.server_frame(frame));
            left -= taken;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_open(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for GuardedIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut h = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        h.extend_from_slice(&stream.to_be_bytes());
        h
    }

    #[test]
    fn scanner_finds_headers_split_anywhere() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(header(6, 0x4, 0, 0));
        wire.extend([0; 6]);
        wire.extend(header(3, FRAME_HEADERS, 0x4, 1));
        wire.extend([1, 2, 3]);
        wire.extend(header(8, FRAME_PING, 0, 0));
        wire.extend([0; 8]);
        for chunk in [1, 2, 5, 9, 24, 100] {
            let mut scanner = FrameScanner::new(PREFACE_LEN);
            let mut seen = Vec::new();
            for piece in wire.chunks(chunk) {
                scanner.scan(piece, |h| seen.push((h.kind, h.stream)));
            }
            assert_eq!(seen, [(0x4, 0), (FRAME_HEADERS, 1), (FRAME_PING, 0)], "chunks of {chunk}");
            assert!(scanner.at_boundary());
        }
    }

    fn state(ping_without_stream: bool) -> ConnectionState {
        let mut state = ConnectionState::new(Arc::new(ConnectionPolicy {
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: None,
            ping_min_time: Duration::from_secs(30),
            ping_without_stream,
        }));
        state.handshaken = true;
        state
    }

    #[tokio::test]
    async fn the_fourth_early_ping_ends_the_connection() {
        let mut state = state(false);
        for _ in 0..3 {
            state.ping();
            assert_eq!(state.ending, None);
        }
        state.ping();
        assert_eq!(state.ending, Some(Ending::TooManyPings));
    }

    #[tokio::test]
    async fn server_output_between_pings_forgives_them() {
        let mut state = state(true);
        for _ in 0..10 {
            state.ping();
            state.server_frame(FrameHeader { kind: FRAME_DATA, flags: 0, stream: 1 });
        }
        assert_eq!(state.ending, None);
        assert_eq!(state.ping_strikes, 0);
    }

    #[test]
    fn goaway_names_the_last_stream_and_the_cause() {
        let frame = goaway_frame(Ending::TooManyPings, 7);
        assert_eq!(&frame[..9], &header(8 + 14, FRAME_GOAWAY, 0, 0)[..]);
        assert_eq!(&frame[9..13], &7u32.to_be_bytes());
        assert_eq!(&frame[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&frame[17..], b"too_many_pings");
    }
}
