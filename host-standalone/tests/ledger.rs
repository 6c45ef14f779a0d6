//! Events arriving from a Fabric ledger (distributed mode) land in the same event store:
//! numbered in ledger order after the channel's head, one transaction per block with its
//! checkpoint, a block at or below the checkpoint skipped; QueryEvents and SubscribeToEvents
//! serve them like any other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use orchestrator_host_standalone::postgres::ledger;
use orchestrator_proto::event_service_client::EventServiceClient;
use orchestrator_proto::{Event, QueryEventsParam, SubscribeToEventsParam};
use prost::Message;

fn event(id: &str, asset_key: &str) -> Vec<u8> {
    Event {
        id: id.to_owned(),
        asset_key: asset_key.to_owned(),
        asset_kind: 1,
        event_kind: 1,
        channel: "mychannel".to_owned(),
        timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn ledger_blocks_are_numbered_in_order_once() {
    let server = TestServer::start().await;
    let pool = &server.pool;
    assert_eq!(ledger::checkpoint(pool, "mychannel").await.unwrap(), None);

    let client = server.client("MyOrg1MSP", "mychannel").await;
    let mut stream = EventServiceClient::new(client.clone())
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
        .await
        .expect("subscribe")
        .into_inner();

    assert!(ledger::append_block(pool, "mychannel", 5, vec![event("e1", "a"), event("e2", "b")]).await.unwrap());
    // A replay of the same block, or of an older one, changes nothing.
    assert!(!ledger::append_block(pool, "mychannel", 5, vec![event("e1", "a"), event("e2", "b")]).await.unwrap());
    assert!(!ledger::append_block(pool, "mychannel", 3, vec![event("old", "c")]).await.unwrap());
    assert!(ledger::append_block(pool, "mychannel", 7, vec![event("e3", "c")]).await.unwrap());
    // A block of another channel has its own numbering and checkpoint.
    assert!(ledger::append_block(pool, "yourchannel", 2, vec![event("y1", "d")]).await.unwrap());
    assert_eq!(ledger::checkpoint(pool, "mychannel").await.unwrap(), Some(7));
    assert_eq!(ledger::checkpoint(pool, "yourchannel").await.unwrap(), Some(2));

    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT channel, channel_position, event_id FROM events ORDER BY channel, channel_position")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected = [("mychannel", 1, "e1"), ("mychannel", 2, "e2"), ("mychannel", 3, "e3"), ("yourchannel", 1, "y1")];
    let rows: Vec<(&str, i64, &str)> = rows.iter().map(|(c, p, e)| (c.as_str(), *p, e.as_str())).collect();
    assert_eq!(rows, expected);

    let page = EventServiceClient::new(client)
        .query_events(QueryEventsParam { page_size: 10, ..Default::default() })
        .await
        .expect("query events")
        .into_inner();
    let ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);

    for expected in ["e1", "e2", "e3"] {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("in time");
        assert_eq!(next.expect("stream").expect("an event").id, expected);
    }
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn a_block_of_undecodable_events_is_refused_whole() {
    let server = TestServer::start().await;
    let pool = &server.pool;
    let refused = ledger::append_block(pool, "mychannel", 1, vec![event("ok", "a"), vec![0xff, 0xff]]).await;
    assert!(matches!(refused, Err(ledger::AppendError::Events(_))), "{refused:?}");
    assert_eq!(ledger::checkpoint(pool, "mychannel").await.unwrap(), None, "the checkpoint did not move");
    assert!(server.events().await.is_empty(), "nothing of the block was stored");
    server.stop().await;
}
