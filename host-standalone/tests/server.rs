//! The real server over gRPC against the real PostgreSQL (one fresh database per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use orchestrator_proto::info_service_client::InfoServiceClient;
use orchestrator_proto::organization_service_client::OrganizationServiceClient;
use orchestrator_proto::{Event, GetAllOrganizationsParam, QueryVersionParam, RegisterOrganizationParam};
use prost::Message as _;
use sha2::Digest as _;
use tonic::Code;

const REGISTER_ORG: &str = "/orchestrator.OrganizationService/RegisterOrganization";
const QUERY_VERSION: &str = "/orchestrator.InfoService/QueryVersion";

fn empty_register() -> Vec<u8> {
    RegisterOrganizationParam { address: String::new() }.encode_to_vec()
}

async fn expect_status(
    server: &TestServer,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    code: Code,
    message: &str,
) {
    let status = server.raw_call(path, body, headers).await.expect_err("the call must fail");
    assert_eq!((status.code(), status.message()), (code, message), "headers {headers:?}");
}

#[tokio::test]
async fn header_checks() {
    let server = TestServer::start().await;
    let mspid = "OE0003: missing or invalid header 'mspid'";
    let channel = "missing or invalid header 'channel'";
    type Case<'a> = (Vec<(&'a str, &'a str)>, Code, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![("channel", "mychannel")], Code::FailedPrecondition, mspid),
        (
            vec![("mspid", "MyOrg1MSP"), ("mspid", "MyOrg1MSP"), ("channel", "mychannel")],
            Code::FailedPrecondition,
            mspid,
        ),
        (vec![("mspid", "MyOrg1MSP")], Code::Unknown, channel),
        (vec![("mspid", "MyOrg1MSP"), ("channel", "mychannel"), ("channel", "mychannel")], Code::Unknown, channel),
        (
            vec![("mspid", "NobodyMSP"), ("channel", "mychannel")],
            Code::Unknown,
            "organization \"NobodyMSP\" is unknown",
        ),
        (
            vec![("mspid", "MyOrg2MSP"), ("channel", "yourchannel")],
            Code::Unknown,
            "organization \"MyOrg2MSP\" has not access to channel \"yourchannel\"",
        ),
        (
            vec![("mspid", "MyOrg1MSP"), ("channel", "nochannel")],
            Code::Unknown,
            "organization \"MyOrg1MSP\" has not access to channel \"nochannel\"",
        ),
    ];
    for (headers, code, message) in &cases {
        // Both a read and a write: refused before any logic or transaction.
        expect_status(&server, QUERY_VERSION, Vec::new(), headers, *code, message).await;
        expect_status(&server, REGISTER_ORG, empty_register(), headers, *code, message).await;
    }
    assert_eq!(server.state_rows().await, 0);
    assert!(server.events().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn malformed_protobuf_is_internal_and_writes_nothing() {
    let server = TestServer::start().await;
    let headers = [("mspid", "MyOrg1MSP"), ("channel", "mychannel")];
    // Field 1 (string) announcing 100 bytes that never come; then a bare invalid tag.
    for garbage in [vec![0x0A, 100, b'x'], vec![0xFF, 0xFF, 0xFF, 0xFF], vec![0x00]] {
        let status =
            server.raw_call(REGISTER_ORG, garbage.clone(), &headers).await.expect_err("garbage must be refused");
        assert_eq!(status.code(), Code::Internal, "{garbage:?}: {status:?}");
    }
    assert_eq!(server.state_rows().await, 0);
    assert!(server.events().await.is_empty());
    // The server keeps serving.
    server.raw_call(QUERY_VERSION, Vec::new(), &headers).await.expect("still serving");
    server.stop().await;
}

#[tokio::test]
async fn oversize_message_is_resource_exhausted() {
    let server = TestServer::start_with(|config| config.grpc_max_message_bytes = 16 * 1024).await;
    let headers = [("mspid", "MyOrg1MSP"), ("channel", "mychannel")];
    let big = RegisterOrganizationParam { address: "x".repeat(32 * 1024) }.encode_to_vec();
    let status = server.raw_call(REGISTER_ORG, big, &headers).await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(server.state_rows().await, 0);
    assert!(server.events().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_need_no_headers() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let response =
        health.check(HealthCheckRequest { service: String::new() }).await.expect("health check").into_inner();
    assert_eq!(response.status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection stream")
        .into_inner();
    let first = stream.message().await.expect("reflection answer").expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection answer {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in orchestrator_host_standalone::grpc::SERVICES {
        assert!(names.iter().any(|n| n == service), "{service} not in {names:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn query_version() {
    let server = TestServer::start().await;
    let mut info = InfoServiceClient::new(server.client("MyOrg2MSP", "mychannel").await);
    let version = info.query_version(QueryVersionParam {}).await.expect("QueryVersion").into_inner();
    assert!(!version.orchestrator.is_empty());
    // The extension field: the sha256 of the component that answered, hashed here from the
    // embedded bytes.
    let sha256 = hex::encode(sha2::Sha256::digest(orchestrator_logic_component::COMPONENT));
    assert_eq!(version.logic_sha256, sha256);
    server.stop().await;
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let server = TestServer::start().await;
    let headers = [("mspid", "MyOrg1MSP"), ("channel", "mychannel")];
    // Not in the API: grpc-go's standard answer, headers or not.
    let status = server
        .raw_call("/orchestrator.InfoService/NoSuchMethod", Vec::new(), &headers)
        .await
        .expect_err("unknown method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(status.message(), "unknown method NoSuchMethod for service orchestrator.InfoService");
    let status =
        server.raw_call("/orchestrator.NoSuchService/Get", Vec::new(), &[]).await.expect_err("unknown service");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    server.stop().await;
}

#[tokio::test]
async fn subscribe_to_events_refusals() {
    use orchestrator_proto::SubscribeToEventsParam;
    use orchestrator_proto::event_service_client::EventServiceClient;

    let server = TestServer::start().await;
    let mut events = EventServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);
    // The reference fails an unknown start event with a raw SQL error; here it is NOT_FOUND.
    let status = events
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: "00000000-0000-4000-8000-000000000000".into() })
        .await
        .expect_err("unknown start event");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().starts_with("OE0002: "), "{status:?}");

    // Streams have no error mapper: header refusals are UNKNOWN with the error text.
    let mut headerless = EventServiceClient::new(server.channel().await);
    let status = headerless
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
        .await
        .expect_err("no headers");
    assert_eq!((status.code(), status.message()), (Code::Unknown, "OE0003: missing or invalid header 'mspid'"));
    server.stop().await;
}

#[tokio::test]
async fn register_organization_writes_state_and_events_in_one_transaction() {
    let server = TestServer::start().await;
    let mut org1 = OrganizationServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);

    let registered = org1
        .register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect("RegisterOrganization")
        .into_inner();
    assert_eq!(registered.id, "MyOrg1MSP");

    let all = org1.get_all_organizations(GetAllOrganizationsParam {}).await.expect("GetAllOrganizations").into_inner();
    let ids: Vec<&str> = all.organizations.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["MyOrg1MSP"]);

    let events = server.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let row = &events[0];
    assert_eq!(row.channel, "mychannel");
    assert!(!row.event_id.is_empty());
    let event = Event::decode(row.payload.as_slice()).expect("payload is an Event");
    assert_eq!(event.id, row.event_id);

    // Again: ALREADY_EXISTS, and nothing more written.
    let status = org1
        .register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect_err("second registration");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().starts_with("OE0006: "), "{status:?}");
    assert_eq!(server.events().await.len(), 1);

    // Another organization: a second event at a later position.
    let mut org2 = OrganizationServiceClient::new(server.client("MyOrg2MSP", "mychannel").await);
    org2.register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect("second organization");
    let events = server.events().await;
    assert_eq!(events.len(), 2);
    assert!(events[0].position < events[1].position);
    assert_ne!(events[0].event_id, events[1].event_id);
    assert!(events.iter().all(|e| e.channel == "mychannel"));
    server.stop().await;
}

#[tokio::test]
async fn channels_are_independent() {
    let server = TestServer::start().await;
    let mut mine = OrganizationServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);
    let mut yours = OrganizationServiceClient::new(server.client("MyOrg1MSP", "yourchannel").await);
    mine.register_organization(RegisterOrganizationParam { address: String::new() }).await.expect("on mychannel");
    // Not visible on yourchannel, and registrable there too.
    let on_yours =
        yours.get_all_organizations(GetAllOrganizationsParam {}).await.expect("GetAllOrganizations").into_inner();
    assert!(on_yours.organizations.is_empty());
    yours.register_organization(RegisterOrganizationParam { address: String::new() }).await.expect("on yourchannel");
    let on_yours =
        yours.get_all_organizations(GetAllOrganizationsParam {}).await.expect("GetAllOrganizations").into_inner();
    assert_eq!(on_yours.organizations.len(), 1);

    let channels: Vec<String> = server.events().await.into_iter().map(|e| e.channel).collect();
    assert_eq!(channels, ["mychannel", "yourchannel"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_succeed() {
    let server = TestServer::start_with(|config| {
        config.tx_retry_budget = std::time::Duration::from_secs(20);
    })
    .await;
    let orgs = ["MyOrg1MSP", "MyOrg2MSP", "Org3MSP", "Org4MSP", "Org5MSP", "Org6MSP", "Org7MSP", "Org8MSP"];
    let mut tasks = Vec::new();
    for org in orgs {
        let mut client = OrganizationServiceClient::new(server.client(org, "mychannel").await);
        tasks.push(tokio::spawn(async move {
            client.register_organization(RegisterOrganizationParam { address: String::new() }).await
        }));
    }
    for (org, task) in orgs.iter().zip(tasks) {
        let registered = task.await.expect("task").expect("registered");
        assert_eq!(registered.into_inner().id, *org);
    }
    let mut client = OrganizationServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);
    let all =
        client.get_all_organizations(GetAllOrganizationsParam {}).await.expect("GetAllOrganizations").into_inner();
    assert_eq!(all.organizations.len(), orgs.len());
    let events = server.events().await;
    assert_eq!(events.len(), orgs.len());
    server.stop().await;
}

/// Holds mychannel's write lock in a transaction of its own, as a second orchestrator process
/// would, and starts a RegisterOrganization of MyOrg1MSP on mychannel; returns once the call
/// waits for the lock. The blocker has already inserted `row` (when given) in the channel.
async fn call_behind_channel_lock(
    server: &TestServer,
    row: Option<(String, Vec<u8>)>,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Result<orchestrator_proto::Organization, tonic::Status>>,
) {
    let mut blocker = server.pool.begin().await.expect("blocker transaction");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(orchestrator_host_standalone::postgres::channel_lock_key("mychannel"))
        .execute(&mut *blocker)
        .await
        .expect("blocker takes the channel lock");
    if let Some((key, value)) = row {
        sqlx::query("INSERT INTO state (channel, key, value) VALUES ('mychannel', $1, $2)")
            .bind(&key)
            .bind(&value)
            .execute(&mut *blocker)
            .await
            .expect("blocker insert");
    }
    let call = register_org1_in_background(server).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while waiting_on_channel_lock(server).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the call never waited on the channel lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (blocker, call)
}

/// Starts a RegisterOrganization of MyOrg1MSP on mychannel.
async fn register_org1_in_background(
    server: &TestServer,
) -> tokio::task::JoinHandle<Result<orchestrator_proto::Organization, tonic::Status>> {
    let mut mine = OrganizationServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);
    tokio::spawn(async move {
        mine.register_organization(RegisterOrganizationParam { address: String::new() })
            .await
            .map(tonic::Response::into_inner)
    })
}

/// Backends of the test database waiting for an advisory lock.
async fn waiting_on_channel_lock(server: &TestServer) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )
    .fetch_all(&server.pool)
    .await
    .expect("pg_stat_activity")
}

/// The state row RegisterOrganization of MyOrg1MSP writes, learnt on another channel (no key
/// layout assumed here).
async fn organization_row(server: &TestServer) -> (String, Vec<u8>) {
    let mut yours = OrganizationServiceClient::new(server.client("MyOrg1MSP", "yourchannel").await);
    yours.register_organization(RegisterOrganizationParam { address: String::new() }).await.expect("on yourchannel");
    sqlx::query_as("SELECT key, value FROM state WHERE channel = 'yourchannel'")
        .fetch_one(&server.pool)
        .await
        .expect("the organization's state row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_another_process_come_first_in_the_channel_order() {
    let server = TestServer::start().await;
    let row = organization_row(&server).await;
    let (blocker, call) = call_behind_channel_lock(&server, Some(row)).await;
    blocker.commit().await.expect("blocker commit");
    // The call ran after the other writer committed, and saw its row: no lost update.
    let status = call.await.expect("call task").expect_err("the organization exists");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let channels: Vec<String> = server.events().await.into_iter().map(|e| e.channel).collect();
    assert_eq!(channels, ["yourchannel"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_connection_is_retried() {
    let server = TestServer::start().await;
    let (blocker, call) = call_behind_channel_lock(&server, None).await;
    for pid in waiting_on_channel_lock(&server).await {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&server.pool).await.expect("terminate");
    }
    // The call runs again on a new connection, which waits for the lock again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while waiting_on_channel_lock(&server).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the call was not run again");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    blocker.rollback().await.expect("blocker rollback");
    let organization = call.await.expect("call task").expect("registered on the retry");
    assert_eq!(organization.id, "MyOrg1MSP");
    assert_eq!(server.events().await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_past_the_budget_is_unavailable_and_safe_to_retry() {
    let server = TestServer::start_with(|config| config.tx_retry_budget = std::time::Duration::ZERO).await;
    let (blocker, call) = call_behind_channel_lock(&server, None).await;
    for pid in waiting_on_channel_lock(&server).await {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&server.pool).await.expect("terminate");
    }
    let status = call.await.expect("call task").expect_err("no retry left");
    blocker.rollback().await.expect("blocker rollback");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not applied") && status.message().contains("retrying is safe"), "{status:?}");
    assert!(!status.message().contains("SQLSTATE") && !status.message().contains("error returned from"), "{status:?}");
    assert!(server.events().await.is_empty());
    // The client retries, as the message says it may.
    let mut mine = OrganizationServiceClient::new(server.client("MyOrg1MSP", "mychannel").await);
    mine.register_organization(RegisterOrganizationParam { address: String::new() }).await.expect("the retry");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_cut_off_by_a_lost_connection_is_settled_then_run_again() {
    let server = TestServer::start_with(|config| config.tx_retry_budget = std::time::Duration::from_secs(30)).await;
    // The first flush of events stalls inside PostgreSQL until the test lets it go.
    sqlx::raw_sql(
        "CREATE TABLE stall (armed boolean NOT NULL); INSERT INTO stall VALUES (true); \
         CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF (SELECT armed FROM stall) THEN PERFORM pg_sleep(60); END IF; RETURN NULL; END $$; \
         CREATE TRIGGER stall BEFORE INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION stall()",
    )
    .execute(&server.pool)
    .await
    .expect("stall trigger");
    let call = register_org1_in_background(&server).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let flushing: i32 = loop {
        let stalled: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .fetch_optional(&server.pool)
        .await
        .expect("pg_stat_activity");
        if let Some(pid) = stalled {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the flush never started");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    sqlx::query("UPDATE stall SET armed = false").execute(&server.pool).await.expect("disarm");
    // The writer's connection dies in the middle of the flush: nothing of it was stored, and
    // the writer must learn that before answering, then store the call once.
    sqlx::query("SELECT pg_terminate_backend($1)").bind(flushing).execute(&server.pool).await.expect("terminate");
    let organization = call.await.expect("call task").expect("registered after the lost flush");
    assert_eq!(organization.id, "MyOrg1MSP");
    let events = server.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(server.state_rows().await, 1);
    server.stop().await;
}

#[tokio::test]
async fn events_of_one_call_keep_emission_order() {
    use orchestrator_proto::data_manager_service_client::DataManagerServiceClient;
    use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
    use orchestrator_proto::{Addressable, NewDataManager, NewDataSample, NewPermissions, RegisterDataSamplesParam};

    let server = TestServer::start().await;
    let client = server.client("MyOrg1MSP", "mychannel").await;
    OrganizationServiceClient::new(client.clone())
        .register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect("organization");
    let addressable =
        || Addressable { checksum: "a".repeat(64), storage_address: "https://example.org/file".to_owned() };
    let permissions = || NewPermissions { public: true, authorized_ids: Vec::new() };
    let dm_key = uuid::Uuid::new_v4().to_string();
    DataManagerServiceClient::new(client.clone())
        .register_data_manager(NewDataManager {
            key: dm_key.clone(),
            name: "dm".to_owned(),
            new_permissions: Some(permissions()),
            description: Some(addressable()),
            opener: Some(addressable()),
            logs_permission: Some(permissions()),
            ..Default::default()
        })
        .await
        .expect("data manager");

    let sample_keys: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    DataSampleServiceClient::new(client)
        .register_data_samples(RegisterDataSamplesParam {
            samples: sample_keys
                .iter()
                .map(|key| NewDataSample {
                    key: key.clone(),
                    data_manager_keys: vec![dm_key.clone()],
                    checksum: "b".repeat(64),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("data samples");

    let events = server.events().await;
    let asset_keys: Vec<String> =
        events.iter().map(|row| Event::decode(row.payload.as_slice()).expect("Event").asset_key).collect();
    // organization, data manager, then the samples in request (emission) order.
    assert_eq!(asset_keys.len(), 2 + sample_keys.len(), "{asset_keys:?}");
    assert_eq!(asset_keys[2..], sample_keys[..]);
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    server.stop().await;
}

/// Without planner statistics (fresh tables, autovacuum off) PostgreSQL chose plans that fetched
/// a list of keys by reading the whole channel: first a cached bitmap scan, later (with 100,000
/// rows) an index scan on the channel alone with the keys as a filter. The lookup statement
/// leaves it no such choice, even as a generic plan.
#[tokio::test]
async fn key_lookups_are_index_probes_without_statistics() {
    let url = format!("{}/orch_test_{}", common::PG_SERVER, uuid::Uuid::new_v4().simple());
    let pool = orchestrator_host_standalone::postgres::connect(&url, 1).await.expect("pool");
    sqlx::query(
        "INSERT INTO state (channel, key, value) SELECT 'c', 'k' || i, '\\x00' FROM generate_series(1, 50000) i",
    )
    .execute(&pool)
    .await
    .expect("rows");
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.expect("generic plans");
    let prepare = format!("PREPARE get_many(text, text[]) AS {}", orchestrator_host_standalone::postgres::GET_MANY);
    sqlx::raw_sql(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.expect("prepare");
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN EXECUTE get_many('c', '{k1,k2}')").fetch_all(&mut *conn).await.expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using state_pkey"), "{plan}");
    assert!(plan.contains("Index Cond: ((channel = $1) AND (key = k.key))"), "{plan}");
    assert!(plan.contains("Nested Loop"), "{plan}");
    assert!(!plan.contains("Filter"), "{plan}");
    drop(conn);
    pool.close().await;
    orchestrator_host_standalone::postgres::drop_database(&url).await.expect("drop");
}

/// sqlx 0.9.0 leaves Nagle on; the pool turns it off on every connection (each big statement
/// otherwise waits ~40 ms for PostgreSQL's delayed ACK).
#[tokio::test]
async fn database_connections_have_tcp_nodelay() {
    use orchestrator_host_standalone::postgres::{self, nodelay};

    let server = TestServer::start().await;
    // The check tells the two apart: a plain sqlx pool (the test's own) has Nagle on.
    let mut plain = server.pool.acquire().await.expect("connection");
    assert_eq!(nodelay::is_set_on(&mut plain).await.expect("query"), Some(false), "a plain sqlx connection");
    let pool = postgres::connect(&server.db_url, 2).await.expect("the orchestrator's pool");
    let (mut a, mut b) = (pool.acquire().await.expect("connection"), pool.acquire().await.expect("connection"));
    for conn in [&mut a, &mut b] {
        assert_eq!(nodelay::is_set_on(conn).await.expect("query"), Some(true), "the orchestrator's connection");
    }
}

/// GET `path` on `addr` with a bare HTTP/1.1 request; the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code() {
    let server = TestServer::start_with(|c| {
        c.metrics_enabled = true;
        c.metrics_addr = "127.0.0.1:0".parse().expect("address");
    })
    .await;
    let addr = server.metrics_addr.expect("metrics enabled");
    let client = server.client("MyOrg1MSP", "mychannel").await;
    let mut orgs = OrganizationServiceClient::new(client.clone());
    orgs.register_organization(RegisterOrganizationParam { address: String::new() }).await.expect("register");
    let again = orgs.register_organization(RegisterOrganizationParam { address: String::new() }).await;
    assert_eq!(again.expect_err("registered twice").code(), Code::AlreadyExists);
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let labels =
        "grpc_type=\"unary\",grpc_service=\"orchestrator.OrganizationService\",grpc_method=\"RegisterOrganization\"";
    for line in [
        format!("grpc_server_started_total{{{labels}}} 2"),
        format!("grpc_server_handled_total{{{labels},grpc_code=\"OK\"}} 1"),
        format!("grpc_server_handled_total{{{labels},grpc_code=\"AlreadyExists\"}} 1"),
        format!("grpc_server_handling_seconds_count{{{labels}}} 2"),
        "orc_db_transaction_total{method=\"orchestrator.OrganizationService/RegisterOrganization\",outcome=\"commit\"} 1"
            .to_owned(),
        "orc_event_streams_open 0".to_owned(),
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }
    let fuel = body
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "orc_logic_fuel_consumed_total{method=\"orchestrator.OrganizationService/RegisterOrganization\"} ",
            )
        })
        .and_then(|n| n.parse::<u64>().ok())
        .expect("fuel of RegisterOrganization");
    assert!(fuel > 0);
    let sha256 = hex::encode(sha2::Sha256::digest(orchestrator_logic_component::COMPONENT));
    let info = format!(
        "orc_logic_component_info{{sha256=\"{sha256}\",version=\"{}\",world=\"substra:orchestrator@0.1.0\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.lines().any(|l| l == info), "missing {info:?} in\n{body}");
    assert_eq!(http_get(addr, "/other").await.0, "HTTP/1.1 404 Not Found");
    server.stop().await;
}
