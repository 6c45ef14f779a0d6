//! A budget of request bytes in flight, shared by every call of the process.
//!
//! A call takes its message's size from the budget when the gRPC length prefix arrives, before
//! the bytes are read, and gives it back when both its body and its handler are done (the
//! decoded request lives until the answer is ready). Taking the whole message at once, in
//! arrival order, means calls never hold part of the budget while waiting for more, so they
//! cannot deadlock. A call that cannot get its bytes within the wait bound is refused with
//! RESOURCE_EXHAUSTED; meanwhile it reads nothing, so HTTP/2 flow control holds the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;

/// The gRPC message prefix: compression flag, then the length (u32, big-endian).
const PREFIX_LEN: usize = 5;

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The budget, as a tower layer over the gRPC router.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
    max_message: usize,
    wait: Duration,
}

impl RequestBudget {
    /// A budget of `total` bytes; messages larger than `max_message` are left to the codec to
    /// refuse; a call waits at most `wait` for its bytes.
    pub fn new(total: usize, max_message: usize, wait: Duration) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self { semaphore: Arc::new(Semaphore::new(total)), total, max_message, wait }
    }

    /// Bytes taken by the calls in flight.
    pub fn in_flight(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl<S> tower::Layer<S> for RequestBudget {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budgeted { inner, budget: self.clone() }
    }
}

/// A service whose requests take their bytes from the budget.
#[derive(Debug, Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: RequestBudget,
}

/// The permits of one call, released when its body and its response future are both gone.
type Held = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

impl<S, B> tower::Service<http::Request<Body>> for Budgeted<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let held = Held::default();
        let budget = self.budget.clone();
        let body_held = Arc::clone(&held);
        let request = request.map(|body| Body::new(BudgetedBody::new(body, budget, body_held)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(held);
            response
        })
    }
}

/// A request body that reads no message before its bytes are in the budget.
struct BudgetedBody {
    inner: Body,
    budget: RequestBudget,
    held: Held,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    message_left: u64,
    /// Waiting for permits, with the frame that announced the message.
    waiting: Option<(Acquire, Pin<Box<Sleep>>, Frame<Bytes>)>,
}

impl BudgetedBody {
    fn new(inner: Body, budget: RequestBudget, held: Held) -> Self {
        Self { inner, budget, held, prefix: [0; PREFIX_LEN], prefix_len: 0, message_left: 0, waiting: None }
    }

    /// Bytes of the messages that `data` starts, as far as the budget must cover them.
    fn announced(&mut self, mut data: &[u8]) -> usize {
        let mut need = 0usize;
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = usize::try_from(self.message_left).unwrap_or(usize::MAX).min(data.len());
                self.message_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (PREFIX_LEN - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == PREFIX_LEN {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                self.message_left = u64::from(len);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                // Oversized messages are the codec's to refuse, with its own status.
                if len <= self.budget.max_message {
                    need = need.saturating_add(len + PREFIX_LEN);
                }
            }
        }
        need.min(self.budget.total)
    }

    fn keep(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(permits) => permits.merge(permit),
            None => *held = Some(permit),
        }
    }

    fn refusal(&self) -> Status {
        tracing::warn!(
            budget = self.budget.total,
            in_flight = self.budget.in_flight(),
            wait = ?self.budget.wait,
            "call refused: the request bytes in flight fill ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT"
        );
        Status::resource_exhausted(format!(
            "the server is busy: requests in flight hold its whole request budget ({} bytes, \
             ORCHESTRATOR_GRPC_MAX_REQUEST_BYTES_IN_FLIGHT) and none freed room within {:?}; retrying later is safe",
            self.budget.total, self.budget.wait
        ))
    }
}

impl HttpBody for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some((acquire, timer, _)) = &mut this.waiting {
            match acquire.as_mut().poll(cx) {
                Poll::Ready(Ok(permit)) => {
                    let frame = this.waiting.take().map(|(_, _, frame)| frame);
                    this.keep(permit);
                    return Poll::Ready(frame.map(Ok));
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(Status::unavailable("the server is stopping")))),
                Poll::Pending => {
                    ready!(timer.as_mut().poll(cx));
                    this.waiting = None;
                    return Poll::Ready(Some(Err(this.refusal())));
                }
            }
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let need = frame.data_ref().map_or(0, |data| this.announced(data));
        if need == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        let need32 = u32::try_from(need).unwrap_or(u32::MAX);
        if let Ok(permit) = Arc::clone(&this.budget.semaphore).try_acquire_many_owned(need32) {
            this.keep(permit);
            return Poll::Ready(Some(Ok(frame)));
        }
        tracing::debug!(need, in_flight = this.budget.in_flight(), "call waits for room in the request budget");
        let acquire: Acquire = Box::pin(Arc::clone(&this.budget.semaphore).acquire_many_owned(need32));
        this.waiting = Some((acquire, Box::pin(tokio::time::sleep(this.budget.wait)), frame));
        // Poll the new futures so their wakers are registered.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(budget: &RequestBudget) -> BudgetedBody {
        BudgetedBody::new(Body::empty(), budget.clone(), Held::default())
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.resize(PREFIX_LEN + len as usize, 7);
        m
    }

    #[test]
    fn prefixes_are_found_across_frames() {
        let budget = RequestBudget::new(1 << 20, 1 << 20, Duration::from_secs(1));
        let mut wire = message(10);
        wire.extend(message(3));
        let mut body = body(&budget);
        let needs: Vec<usize> = wire.chunks(2).map(|chunk| body.announced(chunk)).collect();
        assert_eq!(needs.iter().sum::<usize>(), 15 + 8);
        assert_eq!(needs[0], 0, "the length is not known after 2 bytes");
        assert_eq!(body.message_left, 0);
    }

    #[test]
    fn oversized_messages_are_left_to_the_codec() {
        let budget = RequestBudget::new(1 << 20, 100, Duration::from_secs(1));
        let mut body = body(&budget);
        assert_eq!(body.announced(&message(101)[..PREFIX_LEN]), 0);
        assert_eq!(body.message_left, 101);
    }
}
