//! The logic's scenarios once more, end to end: every call goes over gRPC to the real server,
//! which runs the embedded component in a SERIALIZABLE PostgreSQL transaction; events are read
//! back from the `events` table. Also checks that every business error reaches the client with
//! the gRPC code of the mapping table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::TestServer;
use orchestrator_logic::testing::Driver;
use orchestrator_logic::{ErrorKind, OrcError};
use orchestrator_proto::Event;
use prost::Message;
use tonic::{Code, Status};

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

/// The gRPC code the host must use for each kind (api-contract §7.1).
fn expected_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::BadRequest => Code::FailedPrecondition,
        ErrorKind::Conflict => Code::AlreadyExists,
        ErrorKind::Internal | ErrorKind::MalformedRequest => Code::Internal,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::InvalidAsset
        | ErrorKind::IncompatibleTaskStatus
        | ErrorKind::CannotDisableModel
        | ErrorKind::MissingTaskOutput
        | ErrorKind::IncompatibleKind => Code::InvalidArgument,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::CannotDisableOutput
        | ErrorKind::TerminatedComputePlan
        | ErrorKind::TerminatedComputeTask
        | ErrorKind::Unknown => Code::Unknown,
    }
}

/// Recover the logic's error kind from what a client sees: the OE prefix, else the code.
fn to_orc_error(status: &Status) -> OrcError {
    let message = status.message().to_owned();
    let kind = match message.get(..6) {
        Some("OE0002") => ErrorKind::NotFound,
        Some("OE0003") => ErrorKind::BadRequest,
        Some("OE0006") => ErrorKind::Conflict,
        Some("OE0007") => ErrorKind::Internal,
        Some("OE0010") => ErrorKind::Unimplemented,
        Some("OE0101") => ErrorKind::InvalidAsset,
        Some("OE0102") => ErrorKind::PermissionDenied,
        Some("OE0104") => ErrorKind::IncompatibleTaskStatus,
        Some("OE0105") => ErrorKind::CannotDisableModel,
        Some("OE0106") => ErrorKind::MissingTaskOutput,
        Some("OE0107") => ErrorKind::IncompatibleKind,
        Some("OE0108") => ErrorKind::CannotDisableOutput,
        Some("OE0109") => ErrorKind::TerminatedComputePlan,
        Some("OE0110") => ErrorKind::TerminatedComputeTask,
        _ => match status.code() {
            Code::Internal => ErrorKind::MalformedRequest,
            Code::Unimplemented => ErrorKind::Unimplemented,
            _ => ErrorKind::Unknown,
        },
    };
    assert_eq!(status.code(), expected_code(kind), "gRPC code of {message:?}");
    OrcError { kind, message }
}

impl Driver for GrpcDriver {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, OrcError> {
        let path = format!("/{method}");
        let headers = [("mspid", msp), ("channel", channel)];
        self.rt
            .block_on(self.server().raw_call(&path, request.to_vec(), &headers))
            .map(|bytes| bytes.to_vec())
            .map_err(|status| to_orc_error(&status))
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
