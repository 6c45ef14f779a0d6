//! Prometheus metrics on `/metrics` (text exposition format 0.0.4), when `METRICS_ENABLED`.
//!
//! The reference's names where they apply (docs/modes.md §2.7: go-grpc-prometheus'
//! `grpc_server_*`, `orc_db_transaction_total`, `orc_event_sent_total`), plus what only this
//! implementation has: the logic's fuel, the relay's state, open event streams and the
//! component's identity. Counters are kept in-process and rendered on each scrape; the
//! endpoint is a minimal HTTP/1.1 responder, as nothing else is served on that port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use orchestrator_runtime::LogicInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::events::{EventHub, RelayStats};
use crate::transport::RequestBudget;

/// Buckets of `grpc_server_handling_seconds` (go-grpc-prometheus' defaults).
const HANDLING_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Largest request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A scraper that sends nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The kind of a gRPC method, as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrpcType {
    Unary,
    ServerStream,
}

impl GrpcType {
    fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ServerStream => "server_stream",
        }
    }
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; HANDLING_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Counters {
    started: BTreeMap<(GrpcType, String), u64>,
    handled: BTreeMap<(GrpcType, String, String), u64>,
    handling: BTreeMap<(GrpcType, String), Histogram>,
    /// `(method, outcome)`: one per database transaction attempt.
    transactions: BTreeMap<(String, &'static str), u64>,
    fuel: BTreeMap<String, u64>,
    /// Requests to swap the logic component, by outcome.
    swaps: [u64; SwapOutcome::ALL.len()],
}

/// How a request to swap the logic component ended (`orc_logic_swaps_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The new version serves.
    Accepted,
    /// The file named the version already serving.
    Unchanged,
    /// The file could not be read, or its component was refused: the old version serves on.
    Refused,
}

impl SwapOutcome {
    const ALL: [SwapOutcome; 3] = [SwapOutcome::Accepted, SwapOutcome::Unchanged, SwapOutcome::Refused];

    fn label(self) -> &'static str {
        match self {
            SwapOutcome::Accepted => "accepted",
            SwapOutcome::Unchanged => "unchanged",
            SwapOutcome::Refused => "refused",
        }
    }
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<Counters>,
    open_streams: AtomicI64,
    /// The version serving (its method table dropped: it is not a label).
    component: Mutex<LogicInfo>,
    relay: Option<(Arc<RelayStats>, Arc<EventHub>)>,
    request_budget: Option<RequestBudget>,
}

impl Metrics {
    /// Metrics of a process running `component`, with the counters of its event relay when it
    /// has one (with the hub, for the channels' heads), and its request budget.
    pub fn new(
        component: &LogicInfo,
        relay: Option<(Arc<RelayStats>, Arc<EventHub>)>,
        request_budget: Option<RequestBudget>,
    ) -> Self {
        Self {
            counters: Mutex::default(),
            open_streams: AtomicI64::new(0),
            component: Mutex::new(without_methods(component)),
            relay,
            request_budget,
        }
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A panic while counting leaves counts that are still counts.
        self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A call to `method` (`package.Service/Method`) started.
    pub fn started(&self, kind: GrpcType, method: &str) {
        *self.counters().started.entry((kind, method.to_owned())).or_default() += 1;
    }

    /// A call to `method` ended with `code` after `elapsed`.
    pub fn handled(&self, kind: GrpcType, method: &str, code: tonic::Code, elapsed: Duration) {
        let mut counters = self.counters();
        *counters.handled.entry((kind, method.to_owned(), code_name(code).to_owned())).or_default() += 1;
        let histogram = counters.handling.entry((kind, method.to_owned())).or_default();
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(HANDLING_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// A call of the logic ran `attempts` database transactions (the last committed when
    /// `committed`) and burnt `fuel`.
    pub fn logic_call(&self, method: &str, attempts: u32, committed: bool, fuel: u64) {
        let mut counters = self.counters();
        let rolled_back = u64::from(attempts.saturating_sub(u32::from(committed)));
        if committed {
            *counters.transactions.entry((method.to_owned(), "commit")).or_default() += 1;
        }
        if rolled_back > 0 {
            *counters.transactions.entry((method.to_owned(), "rollback")).or_default() += rolled_back;
        }
        *counters.fuel.entry(method.to_owned()).or_default() += fuel;
    }

    /// A request to swap the logic component ended with `outcome`; `serving` is the version
    /// serving now (`orc_logic_component_info` names it alone from then on).
    pub fn logic_swap(&self, outcome: SwapOutcome, serving: &LogicInfo) {
        // Counted under the same lock as the component changes: a scrape sees both or neither.
        let mut counters = self.counters();
        // The variants are declared in the order of `ALL`.
        counters.swaps[outcome as usize] += 1;
        *self.component.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = without_methods(serving);
    }

    /// Counts a stream of `method` as open until the guard is dropped, then as handled (OK).
    pub fn stream_opened(self: &Arc<Self>, method: &str, started: Instant) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard { metrics: Arc::clone(self), method: method.to_owned(), started }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self.counters();
        header(&mut out, "grpc_server_started_total", "counter", "RPCs started on the server.");
        for ((kind, method), n) in &counters.started {
            let _ = writeln!(out, "grpc_server_started_total{{{}}} {n}", grpc_labels(*kind, method));
        }
        header(&mut out, "grpc_server_handled_total", "counter", "RPCs completed on the server, by code.");
        for ((kind, method, code), n) in &counters.handled {
            let labels = grpc_labels(*kind, method);
            let _ = writeln!(out, "grpc_server_handled_total{{{labels},grpc_code=\"{code}\"}} {n}");
        }
        header(&mut out, "grpc_server_handling_seconds", "histogram", "Time to handle an RPC.");
        for ((kind, method), histogram) in &counters.handling {
            let labels = grpc_labels(*kind, method);
            for (bound, n) in HANDLING_BUCKETS.iter().zip(histogram.buckets) {
                let _ = writeln!(out, "grpc_server_handling_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "grpc_server_handling_seconds_bucket{{{labels},le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(out, "grpc_server_handling_seconds_sum{{{labels}}} {}", histogram.sum);
            let _ = writeln!(out, "grpc_server_handling_seconds_count{{{labels}}} {}", histogram.count);
        }
        header(&mut out, "orc_db_transaction_total", "counter", "Database transaction attempts, by outcome.");
        for ((method, outcome), n) in &counters.transactions {
            let _ =
                writeln!(out, "orc_db_transaction_total{{method=\"{}\",outcome=\"{outcome}\"}} {n}", escape(method));
        }
        header(&mut out, "orc_logic_fuel_consumed_total", "counter", "Fuel burnt by the logic component.");
        for (method, fuel) in &counters.fuel {
            let _ = writeln!(out, "orc_logic_fuel_consumed_total{{method=\"{}\"}} {fuel}", escape(method));
        }
        header(&mut out, "orc_logic_swaps_total", "counter", "Requests to swap the logic component, by outcome.");
        for (outcome, n) in SwapOutcome::ALL.iter().zip(counters.swaps) {
            let _ = writeln!(out, "orc_logic_swaps_total{{outcome=\"{}\"}} {n}", outcome.label());
        }
        let component = self.component.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        drop(counters);
        header(&mut out, "orc_event_streams_open", "gauge", "SubscribeToEvents streams open.");
        let _ = writeln!(out, "orc_event_streams_open {}", self.open_streams.load(Ordering::Relaxed));
        if let Some((relay, hub)) = &self.relay {
            let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            header(&mut out, "orc_event_sent_total", "counter", "Events the broker confirmed.");
            let _ = writeln!(out, "orc_event_sent_total {}", load(&relay.confirmed));
            header(&mut out, "orc_event_relay_published_total", "counter", "Events handed to the broker.");
            let _ = writeln!(out, "orc_event_relay_published_total {}", load(&relay.published));
            header(&mut out, "orc_event_relay_unconfirmed", "gauge", "Events published, not confirmed yet.");
            let _ = writeln!(
                out,
                "orc_event_relay_unconfirmed {}",
                load(&relay.published).saturating_sub(load(&relay.confirmed))
            );
            header(&mut out, "orc_event_relay_connected", "gauge", "1 while the relay is connected to the broker.");
            let _ = writeln!(out, "orc_event_relay_connected {}", u8::from(relay.connected.load(Ordering::Relaxed)));
            header(
                &mut out,
                "orc_event_relay_lag",
                "gauge",
                "Committed events the broker has not confirmed, by channel.",
            );
            let mut lag = relay.lag(&hub.heads());
            lag.sort();
            for (channel, events) in lag {
                let _ = writeln!(out, "orc_event_relay_lag{{channel=\"{}\"}} {events}", escape(&channel));
            }
        }
        if let Some(budget) = &self.request_budget {
            header(&mut out, "orc_grpc_request_bytes_in_flight", "gauge", "Request bytes taken from the budget.");
            let _ = writeln!(out, "orc_grpc_request_bytes_in_flight {}", budget.in_flight());
            header(&mut out, "orc_grpc_request_bytes_budget", "gauge", "The budget of request bytes in flight.");
            let _ = writeln!(out, "orc_grpc_request_bytes_budget {}", budget.total());
        }
        header(
            &mut out,
            "orc_logic_component_info",
            "gauge",
            "The logic component this process runs: sha256 of its bytes, logic version, WIT world.",
        );
        // Only the version serving: after a swap the old label set is gone (stale to Prometheus).
        let _ = writeln!(
            out,
            "orc_logic_component_info{{sha256=\"{}\",version=\"{}\",world=\"{}\"}} 1",
            escape(&component.sha256),
            escape(&component.version),
            escape(&component.world)
        );
        out
    }
}

/// `info` without its method table, which is not a label.
fn without_methods(info: &LogicInfo) -> LogicInfo {
    LogicInfo { methods: Vec::new(), ..info.clone() }
}

/// Keeps one SubscribeToEvents stream counted while it runs.
#[derive(Debug)]
pub struct StreamGuard {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.metrics.handled(GrpcType::ServerStream, &self.method, tonic::Code::Ok, self.started.elapsed());
    }
}

/// go-grpc-prometheus' labels of `method` (`package.Service/Method`).
fn grpc_labels(kind: GrpcType, method: &str) -> String {
    let (service, name) = method.rsplit_once('/').unwrap_or(("", method));
    format!("grpc_type=\"{}\",grpc_service=\"{}\",grpc_method=\"{}\"", kind.label(), escape(service), escape(name))
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// grpc-go's name of a code (`OK`, `InvalidArgument`, ...), as go-grpc-prometheus labels it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &metrics).await {
                        tracing::debug!(error = %err, "metrics scrape failed");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request, one answer, then the connection closes.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => respond(&mut stream, "200 OK", &metrics.render()).await,
        (b"GET", _) => respond(&mut stream, "404 Not Found", "").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_reference_labels() {
        let component = LogicInfo {
            sha256: "abc".to_owned(),
            version: "1.0".to_owned(),
            world: "substra:orchestrator@0.1.0".to_owned(),
            methods: Vec::new(),
        };
        let metrics = Metrics::new(&component, None, None);
        let method = "orchestrator.OrganizationService/RegisterOrganization";
        metrics.started(GrpcType::Unary, method);
        metrics.handled(GrpcType::Unary, method, tonic::Code::InvalidArgument, Duration::from_millis(20));
        metrics.logic_call(method, 3, true, 42);
        let text = metrics.render();
        assert!(text.contains(
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"orchestrator.OrganizationService\",grpc_method=\"RegisterOrganization\",grpc_code=\"InvalidArgument\"} 1"
        ), "{text}");
        assert!(text.contains("le=\"0.01\"} 0\n"), "{text}");
        assert!(text.contains("le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("outcome=\"commit\"} 1\n") && text.contains("outcome=\"rollback\"} 2\n"), "{text}");
        assert!(
            text.contains(
                "orc_logic_component_info{sha256=\"abc\",version=\"1.0\",world=\"substra:orchestrator@0.1.0\"} 1"
            ),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(text.contains("orc_logic_swaps_total{outcome=\"accepted\"} 0\n"), "{text}");
    }

    #[test]
    fn the_component_info_follows_swaps() {
        let info = |sha256: &str| LogicInfo {
            sha256: sha256.to_owned(),
            version: "1.0".to_owned(),
            world: "w".to_owned(),
            methods: Vec::new(),
        };
        let metrics = Metrics::new(&info("old"), None, None);
        metrics.logic_swap(SwapOutcome::Refused, &info("old"));
        metrics.logic_swap(SwapOutcome::Accepted, &info("new"));
        metrics.logic_swap(SwapOutcome::Unchanged, &info("new"));
        let text = metrics.render();
        assert!(text.contains("orc_logic_component_info{sha256=\"new\",version=\"1.0\",world=\"w\"} 1\n"), "{text}");
        assert!(!text.contains("sha256=\"old\""), "{text}");
        for outcome in ["accepted", "unchanged", "refused"] {
            assert!(text.contains(&format!("orc_logic_swaps_total{{outcome=\"{outcome}\"}} 1\n")), "{text}");
        }
    }
}
