//! The peer side of the chaincode stream (`protos.Chaincode/Connect`): dial, handshake, one
//! route per transaction in flight, state requests answered by an endorsement's simulation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use orchestrator_host_fabric::ChaincodeService;
use orchestrator_host_fabric::fabric::protos::chaincode_client::ChaincodeClient;
use orchestrator_host_fabric::fabric::protos::chaincode_message::Type;
use orchestrator_host_fabric::fabric::protos::{
    ChaincodeEvent, ChaincodeId, ChaincodeMessage, Response, SignedProposal,
};
use orchestrator_host_fabric::shim::MAX_MESSAGE_BYTES;
use orchestrator_runtime::Runtime;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::endorsement::TxSimulator;
use crate::store::State;
use crate::{EXECUTE_TIMEOUT, SimError, lock, message_type};

/// Serves `runtime` as a chaincode on a random local port; returns the endpoint to dial.
pub async fn spawn_chaincode(runtime: Runtime, package_id: &str) -> Result<(String, JoinHandle<()>), SimError> {
    spawn_service(ChaincodeService::new(runtime, package_id)).await
}

/// [`spawn_chaincode`] for a service built by the caller (who keeps a clone to look inside, e.g.
/// its compiled logic versions).
pub async fn spawn_service(service: ChaincodeService) -> Result<(String, JoinHandle<()>), SimError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = Server::builder().add_service(service.into_server());
    let handle = tokio::spawn(async move {
        if let Err(error) = router.serve_with_incoming(TcpIncoming::from(listener)).await {
            tracing::warn!(%error, "simulated chaincode server stopped");
        }
    });
    Ok((format!("http://{address}"), handle))
}

/// Per-transaction routes of a connection, by (channel id, tx id).
type Routes = Arc<Mutex<HashMap<(String, String), mpsc::UnboundedSender<ChaincodeMessage>>>>;

/// One peer→chaincode stream, after the handshake.
#[derive(Debug)]
pub struct ChaincodeConnection {
    package_id: String,
    out: mpsc::Sender<ChaincodeMessage>,
    routes: Routes,
    reader: JoinHandle<()>,
    /// TRANSACTION messages sent so far.
    transactions: AtomicU64,
}

impl Drop for ChaincodeConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ChaincodeConnection {
    /// Dials `endpoint` (e.g. `http://127.0.0.1:9999`) and runs the handshake: expects
    /// REGISTER, answers REGISTERED then READY.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, SimError> {
        let channel: Channel = Endpoint::from_shared(endpoint.into())?.connect().await?;
        let mut client = ChaincodeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out, receiver) = mpsc::channel(256);
        let mut inbound = client.connect(ReceiverStream::new(receiver)).await?.into_inner();
        let register = inbound
            .message()
            .await?
            .ok_or_else(|| SimError::Handshake("the stream ended before REGISTER".to_owned()))?;
        if message_type(&register) != Type::Register {
            return Err(SimError::Handshake(format!(
                "expected REGISTER, got {}",
                message_type(&register).as_str_name()
            )));
        }
        let id = ChaincodeId::decode(register.payload.as_slice())
            .map_err(|e| SimError::Handshake(format!("malformed REGISTER payload: {e}")))?;
        for kind in [Type::Registered, Type::Ready] {
            let message = ChaincodeMessage { r#type: kind as i32, ..Default::default() };
            out.send(message).await.map_err(|_| SimError::Handshake("the stream closed".to_owned()))?;
        }
        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_loop(inbound, Arc::clone(&routes)));
        Ok(Self { package_id: id.name, out, routes, reader, transactions: AtomicU64::new(0) })
    }

    /// The package id the chaincode registered with.
    pub fn package_id(&self) -> &str {
        &self.package_id
    }

    /// Sends a raw message on the stream (for protocol tests).
    pub async fn send_raw(&self, message: ChaincodeMessage) -> Result<(), SimError> {
        self.out.send(message).await.map_err(|_| SimError::Handshake("the stream is closed".to_owned()))
    }

    /// How many transactions the peer sent on this stream (endorsements and raw transactions).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Sends TRANSACTION and serves the chaincode's state requests from `simulator` until
    /// COMPLETED or ERROR. `Ok` = COMPLETED's Response and event, `Err` = the failure text.
    pub(crate) async fn execute(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
        simulator: &mut TxSimulator,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let key = (channel_id.to_owned(), txid.to_owned());
        let (sender, mut inbox) = mpsc::unbounded_channel();
        lock(&self.routes).insert(key.clone(), sender);
        let outcome = self.drive(txid, channel_id, payload, proposal, simulator, &mut inbox).await;
        // All iterators and the route die with the transaction.
        lock(&self.routes).remove(&key);
        outcome
    }

    async fn drive(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
        simulator: &mut TxSimulator,
        inbox: &mut mpsc::UnboundedReceiver<ChaincodeMessage>,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        let header =
            ChaincodeMessage { txid: txid.to_owned(), channel_id: channel_id.to_owned(), ..Default::default() };
        let transaction = ChaincodeMessage { r#type: Type::Transaction as i32, payload, proposal, ..header.clone() };
        self.out.send(transaction).await.map_err(|_| "chaincode stream terminated".to_owned())?;
        loop {
            let message = match tokio::time::timeout(EXECUTE_TIMEOUT, inbox.recv()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err("chaincode stream terminated".to_owned()),
                Err(_) => return Err("timeout expired while executing transaction".to_owned()),
            };
            match message_type(&message) {
                Type::Completed => {
                    let response = Response::decode(message.payload.as_slice())
                        .map_err(|e| format!("malformed COMPLETED payload: {e}"))?;
                    return Ok((response, message.chaincode_event));
                }
                Type::Error => {
                    return Err(format!(
                        "transaction returned with failure: {}",
                        String::from_utf8_lossy(&message.payload)
                    ));
                }
                kind => {
                    let reply = match simulator.handle(kind, &message.payload) {
                        Ok(payload) => ChaincodeMessage { r#type: Type::Response as i32, payload, ..header.clone() },
                        Err(error) => ChaincodeMessage {
                            r#type: Type::Error as i32,
                            payload: error.into_bytes(),
                            ..header.clone()
                        },
                    };
                    self.out.send(reply).await.map_err(|_| "chaincode stream terminated".to_owned())?;
                }
            }
        }
    }

    /// Sends a TRANSACTION with arbitrary payload/proposal and returns how it ended, over an
    /// empty state (for protocol tests: malformed proposals).
    pub async fn raw_transaction(
        &self,
        txid: &str,
        channel_id: &str,
        payload: Vec<u8>,
        proposal: Option<SignedProposal>,
    ) -> Result<(Response, Option<ChaincodeEvent>), String> {
        let mut simulator = TxSimulator::new("raw", Arc::new(State::new()));
        self.execute(txid, channel_id, payload, proposal, &mut simulator).await
    }
}

async fn read_loop(mut inbound: tonic::Streaming<ChaincodeMessage>, routes: Routes) {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "chaincode stream failed");
                break;
            }
        };
        if message_type(&message) == Type::Keepalive {
            continue;
        }
        let key = (message.channel_id.clone(), message.txid.clone());
        let route = lock(&routes).get(&key).cloned();
        match route {
            Some(route) => {
                let _ = route.send(message);
            }
            // The 2.5 peer logs and drops messages for unknown transactions.
            None => tracing::warn!(txid = %key.1, "message for no transaction in flight: dropped"),
        }
    }
    // Stream over: every waiting transaction sees "stream terminated".
    lock(&routes).clear();
}
