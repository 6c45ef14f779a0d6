//! SubscribeToEvents: the channel's events after `start_event_id` (all of them when it is
//! empty), then every new one as it is numbered, on one stream.
//!
//! The stream follows the channel's gap-free positions, so the switch from replay to live
//! needs no special care: the subscriber watches the channel's head before its first read,
//! reads pages of rows after the last position it sent, and waits for the head to move when a
//! read comes back empty. No row can be missed (positions are only ever handed out to
//! committed rows, in increasing order) and none is sent twice. Waiting costs no database
//! connection: the process's one LISTEN connection wakes every subscriber.

use std::sync::Arc;

use orchestrator_proto::SubscribeToEventsParam;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::EventHub;
use crate::grpc::ResponseStream;
use crate::metrics::StreamGuard;

/// Events buffered per subscriber before the stream applies back pressure.
const BUFFER: usize = 256;

/// Where the stream starts: the position of `start_event_id` in the channel, or 0.
async fn start_position(hub: &EventHub, channel: &str, start_event_id: &str) -> Result<i64, Status> {
    if start_event_id.is_empty() {
        return Ok(0);
    }
    let not_found =
        || Status::not_found(format!("OE0002: event with id {} not found", crate::quote::quoted(start_event_id)));
    // No event id has NUL, and PostgreSQL text cannot carry one.
    if start_event_id.contains('\0') {
        return Err(not_found());
    }
    let found: Option<i64> =
        sqlx::query_scalar("SELECT channel_position FROM events WHERE channel = $1 AND event_id = $2")
            .bind(channel)
            .bind(start_event_id)
            .fetch_optional(hub.pool())
            .await
            .map_err(|err| Status::unknown(err.to_string()))?;
    found.ok_or_else(not_found)
}

/// Opens the stream of `channel` for a request of bytes `request`.
pub async fn subscribe(
    hub: Arc<EventHub>,
    channel: String,
    request: &[u8],
    batch: u32,
    counted: StreamGuard,
) -> Result<ResponseStream, Status> {
    let param = SubscribeToEventsParam::decode(request)
        .map_err(|err| Status::internal(format!("grpc: error unmarshalling request: {err}")))?;
    // Watch before reading anything: a change after this point wakes us.
    let mut head = hub.head(&channel);
    let start = start_position(&hub, &channel, &param.start_event_id).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tracing::info!(channel = %channel, start_position = start, "event subscriber attached");
    tokio::spawn(async move {
        let sent = follow(&hub, &channel, start, i64::from(batch.max(1)), &mut head, &tx).await;
        tracing::info!(channel = %channel, events_sent = sent, "event subscriber detached");
        drop(counted);
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends events after `last` until the client goes away or the server stops; returns how many.
async fn follow(
    hub: &EventHub,
    channel: &str,
    mut last: i64,
    batch: i64,
    head: &mut tokio::sync::watch::Receiver<i64>,
    tx: &mpsc::Sender<Result<Vec<u8>, Status>>,
) -> u64 {
    let mut sent = 0u64;
    loop {
        head.borrow_and_update();
        let rows = match hub.numbered_after(channel, last, batch).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(channel, error = %err, "event subscriber stopped by a database error");
                let _ = tx.send(Err(Status::unknown(err.to_string()))).await;
                return sent;
            }
        };
        if rows.is_empty() {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return sent },
                () = tx.closed() => return sent,
            }
            continue;
        }
        for event in rows {
            if tx.send(Ok(event.payload)).await.is_err() {
                return sent;
            }
            last = event.position;
            sent = sent.saturating_add(1);
        }
    }
}
