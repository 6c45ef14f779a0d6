//! The gRPC front: one raw-bytes handler behind the 13 orchestrator services.
//!
//! No service is generated: every `/orchestrator.<Service>/<Method>` path reaches the same
//! handler, which checks the headers, runs the method in the logic component inside a database
//! transaction, and maps the outcome to a gRPC status. Request and response bytes are never
//! decoded here.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use orchestrator_runtime::{ErrorKind, LogicInfo, Runtime, identity};
use prost::Message as _;
use sqlx::PgPool;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::service::Routes;
use tonic::{Code, Status};

use crate::channels::ChannelConfig;
use crate::codec::RawCodec;
use crate::distributed::FabricBackend;
use crate::events::{EventHub, subscribe};
use crate::headers::{self, Caller, HeaderError};
use crate::metrics::{GrpcType, Metrics};
use crate::mspid::MspVerifier;
use crate::postgres::{Call, CallError, CallOutcome, Executor, QueryEventsError, TxMode, query_events};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// The response stream of a server-streaming call.
pub type ResponseStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Vec<u8>, Status>> + Send + 'static>>;

/// The 13 services of the orchestrator API (protobuf package `orchestrator`).
pub const SERVICES: [&str; 13] = [
    "orchestrator.OrganizationService",
    "orchestrator.ComputePlanService",
    "orchestrator.ComputeTaskService",
    "orchestrator.DataManagerService",
    "orchestrator.DataSampleService",
    "orchestrator.DatasetService",
    "orchestrator.EventService",
    "orchestrator.FailureReportService",
    "orchestrator.FunctionService",
    "orchestrator.InfoService",
    "orchestrator.ModelService",
    "orchestrator.PerformanceService",
    "orchestrator.ProfilingService",
];

/// Shape of a method declared in the .proto files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodShape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (`SubscribeToEvents`).
    ServerStreaming,
    /// Client or bidirectional streaming (none in the orchestrator API).
    OtherStreaming,
}

/// Failure to read the embedded descriptor set.
#[derive(Debug, thiserror::Error)]
#[error("invalid protobuf descriptor set: {0}")]
pub struct DescriptorError(#[from] prost::DecodeError);

/// Every method of the orchestrator services, from the descriptor set:
/// `orchestrator.<Service>/<Method>` → shape.
pub fn declared_methods(file_descriptor_set: &[u8]) -> Result<BTreeMap<String, MethodShape>, DescriptorError> {
    let set = prost_types::FileDescriptorSet::decode(file_descriptor_set)?;
    let mut methods = BTreeMap::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = format!("{}.{}", package, service.name.unwrap_or_default());
            if !SERVICES.contains(&service_name.as_str()) {
                continue;
            }
            for method in service.method {
                let shape = match (method.client_streaming.unwrap_or(false), method.server_streaming.unwrap_or(false)) {
                    (false, false) => MethodShape::Unary,
                    (false, true) => MethodShape::ServerStreaming,
                    _ => MethodShape::OtherStreaming,
                };
                methods.insert(format!("{service_name}/{}", method.name.unwrap_or_default()), shape);
            }
        }
    }
    Ok(methods)
}

/// The gRPC status code of a logic error kind: the contract's table (docs/api-contract.md §7.1).
pub fn logic_code(kind: ErrorKind) -> Code {
    Code::from(kind.grpc_code().as_i32())
}

fn internal_message(message: &str) -> String {
    if message.starts_with("OE0007") { message.to_owned() } else { format!("OE0007: {message}") }
}

/// The gRPC status of a failed call.
pub fn call_status(err: &CallError) -> Status {
    match err {
        CallError::Logic(logic) => Status::new(logic_code(logic.kind), logic.message.clone()),
        CallError::Trap(message) | CallError::Component(message) => Status::internal(internal_message(message)),
        CallError::Database(message) | CallError::OutcomeUnknown(message) => Status::unknown(message.clone()),
        CallError::NotApplied(message) => Status::unavailable(message.clone()),
        CallError::InvalidEvent(_) => Status::internal(err.to_string()),
    }
}

/// Served by the host from the events outbox rather than by the logic.
const QUERY_EVENTS: &str = "orchestrator.EventService/QueryEvents";
/// The one streaming method, served from the events outbox too.
const SUBSCRIBE_TO_EVENTS: &str = "orchestrator.EventService/SubscribeToEvents";

fn query_events_status(err: &QueryEventsError) -> Status {
    match err {
        QueryEventsError::Malformed(_) | QueryEventsError::Corrupt(_) => Status::internal(err.to_string()),
        QueryEventsError::Token(_) | QueryEventsError::Database(_) => Status::unknown(err.to_string()),
    }
}

/// Where calls run: here, on PostgreSQL, or on Fabric through a peer's Gateway. Either way the
/// events are in the PostgreSQL event store.
#[derive(Debug)]
pub enum CallBackend {
    /// Standalone mode.
    Postgres(Executor),
    /// Distributed mode.
    Fabric {
        /// The Gateway client.
        fabric: FabricBackend,
        /// The event store.
        pool: PgPool,
    },
}

impl CallBackend {
    fn pool(&self) -> &PgPool {
        match self {
            Self::Postgres(executor) => executor.pool(),
            Self::Fabric { pool, .. } => pool,
        }
    }

    async fn run(&self, call: Call, chaincode: Option<&str>) -> CallOutcome {
        match self {
            Self::Postgres(executor) => executor.run(call).await,
            Self::Fabric { fabric, .. } => fabric.run(call, chaincode).await,
        }
    }
}

/// The state shared by every call.
#[derive(Debug)]
pub struct Handler {
    runtime: Runtime,
    channels: ChannelConfig,
    verifier: Option<MspVerifier>,
    backend: CallBackend,
    declared: BTreeMap<String, MethodShape>,
    max_message_bytes: usize,
    hub: Arc<EventHub>,
    replay_batch: u32,
    metrics: Arc<Metrics>,
}

/// What a call log line says about the call.
#[derive(Debug, Default)]
struct CallLog {
    msp_id: Option<String>,
    channel: Option<String>,
    attempts: u32,
    fuel: u64,
    /// The component version that answered (standalone mode, once the logic ran).
    logic: Option<Arc<LogicInfo>>,
}

impl CallLog {
    fn logic_sha256(&self) -> &str {
        self.logic.as_ref().map_or("", |logic| logic.sha256.as_str())
    }
}

impl Handler {
    /// Assembles the handler.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Runtime,
        channels: ChannelConfig,
        verifier: Option<MspVerifier>,
        backend: CallBackend,
        declared: BTreeMap<String, MethodShape>,
        max_message_bytes: usize,
        hub: Arc<EventHub>,
        replay_batch: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { runtime, channels, verifier, backend, declared, max_message_bytes, hub, replay_batch, metrics }
    }

    /// The runtime running the logic.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The caller of `request`, from its headers (and client certificate, when verified).
    fn caller(&self, request: &tonic::Request<Bytes>) -> Result<Caller, HeaderError> {
        let peer_certs = request.peer_certs();
        headers::check(
            request.metadata(),
            self.verifier.as_ref(),
            peer_certs.as_deref().map(Vec::as_slice),
            &self.channels,
        )
    }

    fn grpc(&self) -> Grpc<RawCodec> {
        Grpc::new(RawCodec)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// Serves one HTTP/2 request routed to one of the orchestrator services.
    pub async fn serve(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        match self.declared.get(&method).copied() {
            Some(MethodShape::Unary) => {
                let mut grpc = self.grpc();
                let response = grpc.unary(UnaryCall { handler: self, method: method.clone() }, request).await;
                size_limit_as_resource_exhausted(&method, response)
            }
            Some(MethodShape::ServerStreaming) => {
                let mut grpc = self.grpc();
                let response =
                    grpc.server_streaming(StreamCall { handler: self, method: method.clone() }, request).await;
                size_limit_as_resource_exhausted(&method, response)
            }
            Some(MethodShape::OtherStreaming) | None => {
                // grpc-go's answer to a method the server does not know.
                let (service, name) = method.rsplit_once('/').unwrap_or(("", method.as_str()));
                let status = Status::unimplemented(format!("unknown method {name} for service {service}"));
                tracing::info!(
                    method = %method,
                    code = ?status.code(),
                    error = status.message(),
                    "call refused"
                );
                let (parts, ()) = status.into_http::<()>().into_parts();
                http::Response::from_parts(parts, Body::empty())
            }
        }
    }

    async fn unary(
        self: Arc<Self>,
        method: String,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Vec<u8>>, Status> {
        let started = Instant::now();
        self.metrics.started(GrpcType::Unary, &method);
        let request_id = headers::request_id(request.metadata());
        let mut log = CallLog::default();
        let result = self.unary_inner(&method, request, &mut log).await;
        let elapsed = started.elapsed();
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.handled(GrpcType::Unary, &method, code, elapsed);
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        let mspid = log.msp_id.as_deref().unwrap_or_default();
        let channel = log.channel.as_deref().unwrap_or_default();
        match &result {
            Ok(_) => tracing::info!(
                request_id = %request_id,
                method = %method,
                mspid,
                channel,
                code = ?Code::Ok,
                attempts = log.attempts,
                fuel = log.fuel,
                logic_sha256 = log.logic_sha256(),
                duration_ms = elapsed_ms,
                "call"
            ),
            // tracing wants the level as a constant: one line, written once, per level.
            Err(status) => {
                macro_rules! failed_call {
                    ($level:expr) => {
                        tracing::event!(
                            $level,
                            request_id = %request_id,
                            method = %method,
                            mspid,
                            channel,
                            code = ?status.code(),
                            attempts = log.attempts,
                            logic_sha256 = log.logic_sha256(),
                            duration_ms = elapsed_ms,
                            error = status.message(),
                            "call"
                        )
                    };
                }
                if matches!(status.code(), Code::Internal | Code::Unknown) {
                    failed_call!(tracing::Level::ERROR)
                } else {
                    failed_call!(tracing::Level::WARN)
                }
            }
        }
        result
    }

    async fn unary_inner(
        &self,
        method: &str,
        request: tonic::Request<Bytes>,
        log: &mut CallLog,
    ) -> Result<tonic::Response<Vec<u8>>, Status> {
        let caller = self.caller(&request).map_err(|err| err.unary_status())?;
        let Caller { msp_id, channel } = caller;
        log.msp_id = Some(msp_id.clone());
        log.channel = Some(channel.clone());

        if method == QUERY_EVENTS {
            // Past events are the outbox's rows: the host answers, the logic is not involved.
            let body = request.into_inner();
            return match query_events(self.backend.pool(), &channel, &body).await {
                Ok(response) => Ok(tonic::Response::new(response)),
                Err(err) => Err(query_events_status(&err)),
            };
        }
        let Some(read_only) = self.runtime.is_read_only(method) else {
            return Err(Status::unimplemented(format!("OE0010: {method} is not implemented yet")));
        };
        let chaincode = headers::chaincode(request.metadata());
        let call = Call {
            msp_id,
            channel,
            method: method.to_owned(),
            request: request.into_inner(),
            mode: if read_only { TxMode::ReadOnly } else { TxMode::ReadWrite },
        };
        let outcome = self.backend.run(call, chaincode.as_deref()).await;
        log.attempts = outcome.attempts;
        log.fuel = outcome.fuel_consumed;
        log.logic = outcome.logic;
        self.metrics.logic_call(method, outcome.attempts, outcome.result.is_ok(), outcome.fuel_consumed);
        match outcome.result {
            Ok(mut response) => {
                // QueryVersion names the component that answered: the version that ran the
                // call, not the current one (a swap may have happened since). In distributed
                // mode there is none here: the chaincode named its own, passed on.
                if let Some(logic) = &log.logic {
                    identity::stamp_logic_sha256(method, &mut response, &logic.sha256);
                }
                Ok(tonic::Response::new(response))
            }
            Err(err) => Err(call_status(&err)),
        }
    }

    async fn server_streaming(
        self: Arc<Self>,
        method: String,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<ResponseStream>, Status> {
        let started = Instant::now();
        self.metrics.started(GrpcType::ServerStream, &method);
        let request_id = headers::request_id(request.metadata());
        let checked = self.caller(&request).map_err(|err| err.stream_status());
        let result = match checked {
            Ok(Caller { channel, .. }) if method == SUBSCRIBE_TO_EVENTS => {
                let body = request.into_inner();
                let counted = self.metrics.stream_opened(&method, started);
                subscribe::subscribe(Arc::clone(&self.hub), channel, &body, self.replay_batch, counted)
                    .await
                    .map(tonic::Response::new)
            }
            Ok(_) => Err(Status::unimplemented(format!("OE0010: {method} is not implemented"))),
            Err(status) => Err(status),
        };
        if let Err(status) = &result {
            self.metrics.handled(GrpcType::ServerStream, &method, status.code(), started.elapsed());
            tracing::warn!(
                request_id = %request_id,
                method = %method,
                code = ?status.code(),
                error = status.message(),
                "stream"
            );
        }
        result
    }
}

/// tonic refuses an oversize request with OUT_OF_RANGE; grpc-go (the reference) answers
/// RESOURCE_EXHAUSTED. No logic error maps to OUT_OF_RANGE, so a trailers-only OUT_OF_RANGE
/// answer can only be tonic's size limit.
fn size_limit_as_resource_exhausted(method: &str, response: http::Response<Body>) -> http::Response<Body> {
    match Status::from_header_map(response.headers()) {
        Some(status) if status.code() == Code::OutOfRange => {
            let message = format!("grpc: received message larger than max ({})", status.message());
            tracing::warn!(
                method = %method,
                code = ?Code::ResourceExhausted,
                error = %message,
                "call refused"
            );
            let (parts, ()) = Status::resource_exhausted(message).into_http::<()>().into_parts();
            http::Response::from_parts(parts, Body::empty())
        }
        _ => response,
    }
}

/// One unary call, as tonic's [`Grpc::unary`] wants it.
struct UnaryCall {
    handler: Arc<Handler>,
    method: String,
}

impl UnaryService<Bytes> for UnaryCall {
    type Response = Vec<u8>;
    type Future = BoxFuture<Result<tonic::Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        let method = std::mem::take(&mut self.method);
        Box::pin(handler.unary(method, request))
    }
}

/// One server-streaming call.
struct StreamCall {
    handler: Arc<Handler>,
    method: String,
}

impl ServerStreamingService<Bytes> for StreamCall {
    type Response = Vec<u8>;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Result<tonic::Response<ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        let method = std::mem::take(&mut self.method);
        Box::pin(handler.server_streaming(method, request))
    }
}

/// One orchestrator service (the `I`-th of [`SERVICES`]): a tower service routing every method
/// of that service to the shared handler.
#[derive(Debug)]
pub struct OrchestratorService<const I: usize> {
    handler: Arc<Handler>,
}

impl<const I: usize> Clone for OrchestratorService<I> {
    fn clone(&self) -> Self {
        Self { handler: Arc::clone(&self.handler) }
    }
}

impl<const I: usize> NamedService for OrchestratorService<I> {
    const NAME: &'static str = SERVICES[I];
}

impl<const I: usize> tower::Service<http::Request<Body>> for OrchestratorService<I> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move { Ok(handler.serve(request).await) })
    }
}

/// Routes for the 13 services, all to `handler`.
pub fn routes(handler: &Arc<Handler>) -> Routes {
    macro_rules! add {
        ($builder:ident, $($i:literal),*) => {
            $( $builder.add_service(OrchestratorService::<$i> { handler: Arc::clone(handler) }); )*
        };
    }
    let mut builder = Routes::builder();
    add!(builder, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    builder.routes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_lists_all_services() {
        let declared = declared_methods(orchestrator_proto::FILE_DESCRIPTOR_SET);
        let Ok(declared) = declared else { panic!("descriptor set does not decode") };
        for service in SERVICES {
            assert!(declared.keys().any(|m| m.starts_with(&format!("{service}/"))), "{service} missing");
        }
        assert_eq!(declared.len(), 40);
        assert_eq!(declared.get("orchestrator.EventService/SubscribeToEvents"), Some(&MethodShape::ServerStreaming));
    }

    #[test]
    fn kinds_map_to_reference_codes() {
        assert_eq!(logic_code(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(logic_code(ErrorKind::BadRequest), Code::FailedPrecondition);
        assert_eq!(logic_code(ErrorKind::Conflict), Code::AlreadyExists);
        assert_eq!(logic_code(ErrorKind::CannotDisableOutput), Code::Unknown);
        assert_eq!(logic_code(ErrorKind::MalformedRequest), Code::Internal);
        // Every code the table uses has tonic's number for it.
        for &kind in ErrorKind::ALL {
            assert_eq!(logic_code(kind) as i32, kind.grpc_code().as_i32(), "{kind:?}");
            assert_ne!(logic_code(kind), Code::Ok);
        }
        assert_eq!(internal_message("boom"), "OE0007: boom");
        assert_eq!(internal_message("OE0007: boom"), "OE0007: boom");
    }
}
