//! Copies a channel's orchestrator events from the ledger into the event store: the
//! `chaincode-updates` events of valid transactions, block by block from the checkpoint (the
//! Gateway's ChaincodeEvents), each block in one database transaction with its checkpoint.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_host_fabric::encoding::{self, EVENT_NAME};
use orchestrator_host_fabric::gateway::{GatewayClient, SigningIdentity};
use sqlx::PgPool;
use tokio_stream::StreamExt as _;

use crate::postgres::ledger;

/// Pause before reading the ledger again after a failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a channel's listener reads with.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The peer.
    pub gateway: GatewayClient,
    /// A reader of the channel.
    pub identity: Arc<SigningIdentity>,
    /// The channel.
    pub channel: String,
    /// The chaincode whose events are read.
    pub chaincode: String,
    /// The event store.
    pub pool: PgPool,
}

impl Listener {
    /// Reads until the pool closes, resuming from the checkpoint after every failure.
    pub async fn run(self) {
        loop {
            if self.pool.is_closed() {
                return;
            }
            match self.session().await {
                Ok(()) => tracing::info!(channel = %self.channel, "ledger event stream ended: reconnecting"),
                Err(err) => tracing::warn!(channel = %self.channel, error = %err, "ledger events: reconnecting"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    async fn session(&self) -> Result<(), String> {
        let checkpoint = ledger::checkpoint(&self.pool, &self.channel).await.map_err(|err| err.to_string())?;
        let start = checkpoint.map_or(0, |block| block + 1);
        tracing::info!(channel = %self.channel, start_block = start, "reading ledger events");
        let mut blocks = self
            .gateway
            .chaincode_events(&self.identity, &self.channel, &self.chaincode, Some(start))
            .await
            .map_err(|err| err.to_string())?;
        while let Some(block) = blocks.next().await {
            let block = block.map_err(|err| err.to_string())?;
            let mut events = Vec::new();
            for event in block.events.iter().filter(|event| event.event_name == EVENT_NAME) {
                let decoded = encoding::decode_events_payload(&event.payload)
                    .map_err(|err| format!("transaction {}: undecodable {EVENT_NAME} payload: {err}", event.txid))?;
                events.extend(decoded);
            }
            let count = events.len();
            let appended = ledger::append_block(&self.pool, &self.channel, block.block_number, events)
                .await
                .map_err(|err| format!("block {}: {err}", block.block_number))?;
            if appended {
                tracing::debug!(channel = %self.channel, block = block.block_number, events = count, "ledger events stored");
            }
        }
        Ok(())
    }
}
