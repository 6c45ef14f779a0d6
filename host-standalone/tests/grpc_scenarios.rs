//! The logic's scenarios once more, end to end: every call goes over gRPC to the real server,
//! which runs the embedded component in a SERIALIZABLE PostgreSQL transaction; events are read
//! back from the `events` table. Also checks that every business error reaches the client with
//! the gRPC code of the mapping table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::TestServer;
use orchestrator_logic::testing::Driver;
use orchestrator_logic::{ErrorKind, LogicError};
use orchestrator_proto::Event;
use prost::Message;
use tonic::Status;

struct GrpcDriver {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
}

impl GrpcDriver {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let config = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenario_channels.yaml"));
        let server = rt.block_on(TestServer::start_with(|c| c.channel_config = Some(config)));
        GrpcDriver { rt, server: Some(server) }
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("server running")
    }
}

impl Drop for GrpcDriver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

/// Recovers the logic's error from what a client sees (the contract's [`ErrorKind::from_grpc`])
/// and asserts that the code is the one of the contract's table.
fn to_logic_error(status: &Status) -> LogicError {
    let message = status.message().to_owned();
    let kind = ErrorKind::from_grpc(status.code() as i32, &message);
    assert_eq!(status.code() as i32, kind.grpc_code().as_i32(), "gRPC code of {message:?}");
    LogicError { kind, message }
}

impl Driver for GrpcDriver {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        let path = format!("/{method}");
        let headers = [("mspid", msp), ("channel", channel)];
        self.rt
            .block_on(self.server().raw_call(&path, request.to_vec(), &headers))
            .map(|bytes| bytes.to_vec())
            .map_err(|status| to_logic_error(&status))
    }

    fn events(&self) -> Vec<Event> {
        self.rt
            .block_on(self.server().events())
            .into_iter()
            .map(|row| Event::decode(row.payload.as_slice()).expect("stored event decodes"))
            .collect()
    }
}

orchestrator_logic::scenario_tests!(GrpcDriver::new());

// ---------------------------------------------------------------------------------------------
// Compute tasks at scale and under concurrency, through real clients.

mod tasks {
    use std::collections::BTreeSet;

    use orchestrator_logic::testing::scenarios::computetask::{
        DM1, DM2, PLAN, TRAIN, make_ready, setup_world, train_task,
    };
    use orchestrator_logic::testing::scenarios::{CHANNEL, ORG1, key};
    use orchestrator_proto::compute_task_service_client::ComputeTaskServiceClient;
    use orchestrator_proto::{
        AssetKind, ComputeTask, EventKind, NewComputeTask, QueryTasksParam, RegisterTasksParam, TaskQueryFilter,
    };

    use super::GrpcDriver;
    use orchestrator_logic::testing::Driver;

    /// A chain of `len` train tasks numbered from `first`, alternating data managers.
    fn chain(first: u64, len: u64) -> Vec<NewComputeTask> {
        (first..first + len)
            .map(|n| {
                let parents: Vec<u64> = if n == first { Vec::new() } else { vec![n - 1] };
                if n % 2 == 0 { train_task(n, DM1, &[20], &parents) } else { train_task(n, DM2, &[22], &parents) }
            })
            .collect()
    }

    fn created_keys(d: &GrpcDriver) -> Vec<String> {
        d.events()
            .into_iter()
            .filter(|e| {
                e.asset_kind == AssetKind::AssetComputeTask as i32
                    && e.event_kind == EventKind::EventAssetCreated as i32
            })
            .map(|e| e.asset_key)
            .collect()
    }

    /// Two clients register on one plan at once: two disjoint batches, and one batch sent by
    /// both (a re-send racing the original). Every call succeeds, each task exists once and has
    /// exactly one CREATED event.
    #[test]
    fn concurrent_register_tasks_on_one_plan() {
        let mut d = GrpcDriver::new();
        setup_world(&mut d);
        make_ready(&mut d, TRAIN);
        let a = chain(1_000, 150);
        let b = chain(2_000, 150);
        let shared = chain(3_000, 150);
        let server = d.server();
        let results = d.rt.block_on(async {
            let mut one = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
            let mut two = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
            let (mut one2, mut two2) = (one.clone(), two.clone());
            let (ra, rb, rs1, rs2) = tokio::join!(
                one.register_tasks(RegisterTasksParam { tasks: a.clone() }),
                two.register_tasks(RegisterTasksParam { tasks: b.clone() }),
                one2.register_tasks(RegisterTasksParam { tasks: shared.clone() }),
                two2.register_tasks(RegisterTasksParam { tasks: shared.clone() }),
            );
            [ra, rb, rs1, rs2].map(|r| r.map(|resp| resp.into_inner().tasks))
        });
        let mut responses: Vec<Vec<ComputeTask>> = Vec::new();
        for r in results {
            responses.push(r.expect("every concurrent RegisterTasks succeeds"));
        }
        assert_eq!(responses[2], responses[3], "the re-send answers the stored tasks");
        let created = created_keys(&d);
        assert_eq!(created.len(), 450, "one CREATED event per task, none for the re-send");
        let distinct: BTreeSet<&String> = created.iter().collect();
        assert_eq!(distinct.len(), 450);
        for batch in [&a, &b, &shared] {
            for t in batch.iter() {
                assert!(distinct.contains(&t.key), "task {} registered", t.key);
            }
        }
    }

    /// 1,000 tasks of one plan paged by 137: each exactly once, in (creation, key) order, and
    /// tasks registered while paging only ever appear after the ones already seen.
    #[test]
    fn stable_paging_of_1000_tasks() {
        let mut d = GrpcDriver::new();
        setup_world(&mut d);
        let first: Vec<NewComputeTask> = (10_000..11_000).map(|n| train_task(n, DM1, &[20], &[])).collect();
        let later: Vec<NewComputeTask> = (9_000..9_010).map(|n| train_task(n, DM1, &[21], &[])).collect();
        let server = d.server();
        let seen = d.rt.block_on(async {
            let mut client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
            client.register_tasks(RegisterTasksParam { tasks: first.clone() }).await.expect("1,000 tasks");
            let filter = TaskQueryFilter { compute_plan_key: key(PLAN), ..Default::default() };
            let mut token = String::new();
            let mut seen: Vec<ComputeTask> = Vec::new();
            let mut pages = 0;
            loop {
                let param = QueryTasksParam { page_token: token.clone(), page_size: 137, filter: Some(filter.clone()) };
                let page = client.query_tasks(param).await.expect("page").into_inner();
                seen.extend(page.tasks);
                pages += 1;
                if pages == 3 {
                    // Smaller keys, later creation: they must come last, not shift the pages.
                    client.register_tasks(RegisterTasksParam { tasks: later.clone() }).await.expect("more tasks");
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            seen
        });
        let keys: Vec<String> = seen.iter().map(|t| t.key.clone()).collect();
        let mut expected: Vec<String> = first.iter().map(|t| t.key.clone()).collect();
        expected.extend(later.iter().map(|t| t.key.clone()));
        assert_eq!(keys, expected, "every task once, in creation then key order");
    }
}

// ---------------------------------------------------------------------------------------------
// QueryEvents: answered by the host from the outbox.

mod query_events {
    use std::collections::BTreeMap;

    use orchestrator_logic::testing::scenarios::computetask::{TRAIN, make_ready, setup_world};
    use orchestrator_logic::testing::scenarios::{CHANNEL, ORG1, OTHER_CHANNEL, key, register_organization};
    use orchestrator_logic::testing::{Driver, call};
    use orchestrator_logic::{ErrorKind, LogicError};
    use orchestrator_proto::{
        AssetKind, Event, EventKind, EventQueryFilter, QueryEventsParam, QueryEventsResponse, SortOrder,
    };

    use super::GrpcDriver;

    const QUERY_EVENTS: &str = "orchestrator.EventService/QueryEvents";

    fn query(
        d: &mut GrpcDriver,
        filter: EventQueryFilter,
        sort: SortOrder,
        token: &str,
        size: u32,
    ) -> Result<QueryEventsResponse, LogicError> {
        let param =
            QueryEventsParam { page_token: token.to_owned(), page_size: size, filter: Some(filter), sort: sort as i32 };
        call(d, ORG1, CHANNEL, QUERY_EVENTS, &param)
    }

    fn all_pages(d: &mut GrpcDriver, filter: &EventQueryFilter, sort: SortOrder, size: u32) -> Vec<Event> {
        let mut token = String::new();
        let mut events = Vec::new();
        loop {
            let page = query(d, filter.clone(), sort, &token, size).expect("QueryEvents");
            assert!(page.events.len() <= size as usize);
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            token = page.next_page_token;
        }
    }

    /// Every page, as the events of each page, following the pages' own tokens from `token`.
    fn pages_from(mut next: impl FnMut(&str) -> QueryEventsResponse, token: &str) -> Vec<Vec<Event>> {
        let mut token = token.to_owned();
        let mut pages = Vec::new();
        loop {
            let page = next(&token);
            pages.push(page.events);
            if page.next_page_token.is_empty() {
                return pages;
            }
            token = page.next_page_token;
        }
    }

    /// The host's SQL pages and the pure definition other hosts reuse
    /// (`orchestrator_proto::event_query`) give the same pages, page by page.
    #[test]
    fn pages_equal_the_pure_definition() {
        use orchestrator_proto::event_query::EventQuery;
        let mut d = GrpcDriver::new();
        setup_world(&mut d);
        make_ready(&mut d, TRAIN);
        let committed: Vec<Event> = d.events().into_iter().filter(|e| e.channel == CHANNEL).collect();
        let middle = committed[committed.len() / 2].timestamp;
        let filters = [
            EventQueryFilter::default(),
            EventQueryFilter { asset_kind: AssetKind::AssetComputeTask as i32, ..Default::default() },
            EventQueryFilter {
                asset_key: key(TRAIN),
                event_kind: EventKind::EventAssetUpdated as i32,
                ..Default::default()
            },
            EventQueryFilter {
                metadata: BTreeMap::from([("reason".to_owned(), "User action".to_owned())]),
                ..Default::default()
            },
            EventQueryFilter { start: middle, ..Default::default() },
            EventQueryFilter { end: middle, ..Default::default() },
            EventQueryFilter { asset_key: "a\0b".to_owned(), ..Default::default() },
        ];
        let mut compared = 0;
        for filter in &filters {
            for sort in [SortOrder::Ascending, SortOrder::Descending] {
                for (size, first_token) in [(1, ""), (3, ""), (0, ""), (4, "2"), (10_000, "")] {
                    let param = |token: &str| QueryEventsParam {
                        page_token: token.to_owned(),
                        page_size: size,
                        filter: Some(filter.clone()),
                        sort: sort as i32,
                    };
                    let host = pages_from(
                        |token| query(&mut d, filter.clone(), sort, token, size).expect("QueryEvents"),
                        first_token,
                    );
                    let rows = || committed.iter().enumerate().map(|(i, e)| (i as i64, e));
                    let pure =
                        pages_from(|token| EventQuery::new(param(token)).expect("query").page(rows()), first_token);
                    assert_eq!(host, pure, "{filter:?} {sort:?} size {size} from {first_token:?}");
                    compared += host.len();
                }
            }
        }
        assert!(compared > 100, "{compared} pages compared");
    }

    #[test]
    fn filters_orders_and_pages() {
        let mut d = GrpcDriver::new();
        setup_world(&mut d);
        make_ready(&mut d, TRAIN);
        register_organization(&mut d, ORG1, OTHER_CHANNEL, "").expect("an event on another channel");
        let committed: Vec<Event> = d.events().into_iter().filter(|e| e.channel == CHANNEL).collect();
        assert!(committed.len() > 10);

        // Everything, both orders, in pages or not: the committed events of the channel only.
        let everything = EventQueryFilter::default();
        assert_eq!(all_pages(&mut d, &everything, SortOrder::Ascending, 10_000), committed);
        assert_eq!(all_pages(&mut d, &everything, SortOrder::Unspecified, 3), committed);
        let mut reversed = committed.clone();
        reversed.reverse();
        assert_eq!(all_pages(&mut d, &everything, SortOrder::Descending, 4), reversed);
        let first = query(&mut d, everything.clone(), SortOrder::Ascending, "", 0).expect("default size");
        assert_eq!(first.events.len(), committed.len().min(50));

        // Reference-style offsets are still understood.
        let page = query(&mut d, everything.clone(), SortOrder::Ascending, "2", 3).expect("offset token");
        assert_eq!(page.events, committed[2..5]);

        // Filters, alone and together.
        let expect = |pred: &dyn Fn(&Event) -> bool| committed.iter().filter(|e| pred(e)).cloned().collect::<Vec<_>>();
        let by_kind = EventQueryFilter { asset_kind: AssetKind::AssetDataManager as i32, ..Default::default() };
        let found = all_pages(&mut d, &by_kind, SortOrder::Ascending, 100);
        assert_eq!(found, expect(&|e| e.asset_kind == AssetKind::AssetDataManager as i32));
        assert_eq!(found.len(), 2);
        let by_key = EventQueryFilter { asset_key: key(TRAIN), ..Default::default() };
        assert_eq!(all_pages(&mut d, &by_key, SortOrder::Ascending, 100), expect(&|e| e.asset_key == key(TRAIN)));
        let updated = EventQueryFilter {
            asset_key: key(TRAIN),
            event_kind: EventKind::EventAssetUpdated as i32,
            ..Default::default()
        };
        let found = all_pages(&mut d, &updated, SortOrder::Ascending, 100);
        assert_eq!(found.len(), 2, "BUILDING then READY");
        let by_metadata = EventQueryFilter {
            metadata: BTreeMap::from([("reason".to_owned(), "User action".to_owned())]),
            ..Default::default()
        };
        assert_eq!(
            all_pages(&mut d, &by_metadata, SortOrder::Ascending, 100),
            expect(&|e| e.metadata.get("reason").map(String::as_str) == Some("User action"))
        );
        let none = EventQueryFilter {
            metadata: BTreeMap::from([("reason".to_owned(), "nope".to_owned())]),
            ..Default::default()
        };
        assert!(all_pages(&mut d, &none, SortOrder::Ascending, 100).is_empty());

        // Inclusive time bounds.
        let at = |e: &Event| e.timestamp.as_ref().map(|t| (t.seconds, t.nanos));
        let middle_event = &committed[committed.len() / 2];
        let (middle, middle_at) = (middle_event.timestamp, at(middle_event));
        let from = EventQueryFilter { start: middle, ..Default::default() };
        let found = all_pages(&mut d, &from, SortOrder::Ascending, 100);
        assert_eq!(found, expect(&|e| at(e) >= middle_at));
        let until = EventQueryFilter { end: middle, ..Default::default() };
        let found = all_pages(&mut d, &until, SortOrder::Descending, 100);
        let mut older = expect(&|e| at(e) <= middle_at);
        older.reverse();
        assert_eq!(found, older);
        let exactly = EventQueryFilter { start: middle, end: middle, ..Default::default() };
        assert!(!all_pages(&mut d, &exactly, SortOrder::Ascending, 100).is_empty());

        // Bad requests.
        let err = query(&mut d, everything.clone(), SortOrder::Ascending, "x", 1).expect_err("bad token");
        assert_eq!(err.kind, ErrorKind::Unknown, "{}", err.message);
        let err = d.call_raw(ORG1, CHANNEL, QUERY_EVENTS, &[0xff, 0xff, 0xff]).expect_err("garbage");
        assert_eq!(err.kind, ErrorKind::MalformedRequest, "{}", err.message);
    }

    /// A filter with NUL matches nothing (no event can carry it; PostgreSQL text and jsonb
    /// cannot take it), and a huge token is quoted back cut.
    #[test]
    fn hostile_filters_and_tokens() {
        let mut d = GrpcDriver::new();
        setup_world(&mut d);
        let nul = "reason\0x".to_owned();
        for filter in [
            EventQueryFilter { asset_key: format!("{}\0", key(TRAIN)), ..Default::default() },
            EventQueryFilter { metadata: BTreeMap::from([(nul.clone(), "v".to_owned())]), ..Default::default() },
            EventQueryFilter { metadata: BTreeMap::from([("reason".to_owned(), nul.clone())]), ..Default::default() },
        ] {
            let page = query(&mut d, filter, SortOrder::Ascending, "", 10).expect("no match, no error");
            assert!(page.events.is_empty() && page.next_page_token.is_empty());
        }
        let err = query(&mut d, EventQueryFilter::default(), SortOrder::Ascending, &"x".repeat(1 << 20), 10)
            .expect_err("not a token");
        assert_eq!(err.kind, ErrorKind::Unknown);
        assert!(err.message.len() < 400, "the token is quoted cut: {} bytes", err.message.len());
    }
}
