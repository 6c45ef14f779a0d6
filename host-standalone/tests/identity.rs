//! Which logic a server runs, as callers see it: `orchestrator logic inspect`, the start-up
//! log of the binary run without a subcommand, and QueryVersion's `logic_sha256`. The sha256 is
//! computed here from the embedded bytes, not taken from the runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{Orchestrator, PG_SERVER};
use orchestrator_logic::METHODS;
use orchestrator_proto::QueryVersionParam;
use orchestrator_proto::info_service_client::InfoServiceClient;
use sha2::Digest as _;

fn embedded_sha256() -> String {
    hex::encode(sha2::Sha256::digest(orchestrator_logic_component::COMPONENT))
}

fn orchestrator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator")).args(args).output().expect("run orchestrator")
}

fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "{:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("identity-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("write the file");
    path
}

#[test]
fn inspect_prints_the_embedded_components_identity_and_method_table() {
    let text = stdout_of(&orchestrator(&["logic", "inspect"]));
    assert!(text.contains(&format!("\nsha256   {}\n", embedded_sha256())), "{text}");
    assert!(text.starts_with("file     (embedded)\n"), "{text}");
    assert!(text.contains(&format!("\nversion  {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("\nworld    substra:orchestrator@0.1.0\n"), "{text}");
    assert!(text.contains(&format!("\nmethods  {} (", METHODS.len())), "{text}");
    // Every method of the logic's own table, read-only or not as the logic declares it.
    let listed: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_once(' ').map(|(name, kind)| (name, kind.trim())))
        .collect();
    let expected: Vec<(&str, &str)> =
        METHODS.iter().map(|m| (m.name, if m.read_only { "read-only" } else { "read-write" })).collect();
    assert_eq!(listed, expected, "{text}");
}

#[test]
fn inspect_reads_a_file_and_says_json() {
    let path = temp_file("logic.wasm", orchestrator_logic_component::COMPONENT);
    let json = stdout_of(&orchestrator(&["logic", "inspect", path.to_str().expect("UTF-8 path"), "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(report["file"], path.display().to_string());
    assert_eq!(report["sha256"], embedded_sha256());
    assert_eq!(report["size"], orchestrator_logic_component::COMPONENT.len());
    assert_eq!(report["world"], "substra:orchestrator@0.1.0");
    let methods = report["methods"].as_array().expect("methods");
    assert_eq!(methods.len(), METHODS.len());
    for (got, want) in methods.iter().zip(METHODS) {
        assert_eq!((got["name"].as_str(), got["read_only"].as_bool()), (Some(want.name), Some(want.read_only)));
    }
    std::fs::remove_file(&path).expect("remove the file");
}

#[test]
fn inspect_refuses_what_is_not_a_component() {
    let path = temp_file("garbage.wasm", b"not a component");
    let output = orchestrator(&["logic", "inspect", path.to_str().expect("UTF-8 path")]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("orchestrator logic inspect: "), "{stderr}");
    std::fs::remove_file(&path).expect("remove the file");

    let missing = orchestrator(&["logic", "inspect", "/nonexistent/logic.wasm"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cannot read /nonexistent/logic.wasm"), "{stderr}");
}

/// Without a subcommand the binary is the server, configured by its environment as before; its
/// start-up log and QueryVersion name the component it runs.
#[tokio::test]
async fn the_server_names_its_component_in_the_log_and_in_query_version() {
    let db_url = format!("{PG_SERVER}/orch_test_{}", uuid::Uuid::new_v4().simple());
    let log = temp_file("server.log", b"");
    let server = Orchestrator::spawn_with(
        &db_url,
        None,
        &[("LOG_LEVEL", "info"), ("ORCHESTRATOR_AMQP_ENABLED", "false")],
        Some(&log),
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut info = InfoServiceClient::with_interceptor(
        channel,
        common::Headers::new(&[("mspid", "MyOrg2MSP"), ("channel", "mychannel")]),
    );
    let version = info.query_version(QueryVersionParam {}).await.expect("QueryVersion").into_inner();
    assert_eq!(version.orchestrator, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.logic_sha256, embedded_sha256());
    drop(server);

    let lines = std::fs::read_to_string(&log).expect("the log");
    let line = |message: &str| {
        lines
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in\n{lines}"))
    };
    let loaded = line("logic component loaded");
    assert_eq!(loaded["sha256"], embedded_sha256());
    assert_eq!(loaded["world"], "substra:orchestrator@0.1.0");
    assert_eq!(loaded["source"], "embedded");
    assert_eq!(line("serving gRPC")["logic_sha256"], embedded_sha256());
    std::fs::remove_file(&log).expect("remove the log");
    orchestrator_host_standalone::postgres::drop_database(&db_url).await.expect("drop the database");
}
