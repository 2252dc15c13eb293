//! Agent-plane clients for tests that play the daemon themselves, a fake agent-plane server
//! for tests of the daemon side ([`FakePlane`]), and certificates made in the test (another
//! CA, expired certificates from the server's own CA).

use std::net::IpAddr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic::{Status, Streaming};
use tyr_proto::agent::agent_plane_client::AgentPlaneClient;
use tyr_proto::agent::agent_plane_server::{AgentPlane, AgentPlaneServer};
use tyr_proto::agent::{
    AgentMessage, CapabilityReport, RegisterRequest, RegisterResponse, ServerMessage, Tier,
    agent_message::Msg,
};

use crate::server::TestServer;

/// A client's key and certificate.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The agent id the certificate names.
    pub agent_id: String,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM of the key.
    pub key_pem: String,
}

/// An open `Stream`: what to send, and what the server sends.
#[derive(Debug)]
pub struct OpenStream {
    /// Messages to the server.
    pub tx: mpsc::Sender<AgentMessage>,
    /// Messages from the server.
    pub rx: Streaming<ServerMessage>,
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client to `server`'s agent plane trusting its CA, presenting `creds` when given.
/// `Err` (the transport error) when the connection fails.
pub async fn client(
    server: &TestServer,
    creds: Option<&Credentials>,
) -> Result<AgentPlaneClient<Channel>, String> {
    client_from(server, creds, None).await
}

/// [`client`] connecting from the local address `from` (e.g. `127.0.0.2`) when given.
pub async fn client_from(
    server: &TestServer,
    creds: Option<&Credentials>,
    from: Option<IpAddr>,
) -> Result<AgentPlaneClient<Channel>, String> {
    install_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server.ca_pem()))
        .domain_name("127.0.0.1");
    if let Some(c) = creds {
        tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
    }
    let channel = Channel::from_shared(format!("https://{}", server.grpc_addr()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .local_address(from)
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(AgentPlaneClient::new(channel))
}

/// A fresh P-256 key (PEM) and a CSR (PEM) for it.
pub fn key_and_csr() -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("csr pem");
    (key.serialize_pem(), csr)
}

/// A registration request for `token` with a fresh CSR; returns it with the key.
pub fn register_request(token: &str) -> (RegisterRequest, String) {
    let (key_pem, csr_pem) = key_and_csr();
    let req = RegisterRequest {
        agent_name: "test-agent".into(),
        enrollment_token: token.into(),
        csr_pem,
        kernel_version: "6.1.0-test".into(),
        arch: "x86_64".into(),
        hostname: "test-host".into(),
    };
    (req, key_pem)
}

/// Registers with `token` (no client certificate).
pub async fn register(server: &TestServer, token: &str) -> Result<Credentials, Status> {
    register_from(server, token, None).await
}

/// [`register`] from the local address `from` when given.
pub async fn register_from(
    server: &TestServer,
    token: &str,
    from: Option<IpAddr>,
) -> Result<Credentials, Status> {
    let (req, key_pem) = register_request(token);
    let mut c = client_from(server, None, from)
        .await
        .map_err(Status::unavailable)?;
    let r = c.register(req).await?.into_inner();
    Ok(Credentials {
        agent_id: r.agent_id,
        cert_pem: r.client_cert_pem,
        key_pem,
    })
}

/// A CapabilityReport message (observe tier).
pub fn capability_report() -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::CapabilityReport(CapabilityReport {
            kernel_version: "6.1.0-test".into(),
            tier: Tier::Observe.into(),
            ..CapabilityReport::default()
        })),
    }
}

/// Connects with `creds`, opens `Stream` and sends a CapabilityReport. `Err` describes a
/// refused connection or call (a rejected client certificate may surface either way).
pub async fn open_stream(
    server: &TestServer,
    creds: Option<&Credentials>,
) -> Result<OpenStream, String> {
    open_stream_with(server, creds, capability_report()).await
}

/// [`open_stream`] sending `first` as the first message.
pub async fn open_stream_with(
    server: &TestServer,
    creds: Option<&Credentials>,
    first: AgentMessage,
) -> Result<OpenStream, String> {
    let mut c = client(server, creds).await?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(first).await.map_err(|e| e.to_string())?;
    let rx = c
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(OpenStream { tx, rx })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Test CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new self-signed CA: `(cert_pem, key_pem)`.
pub fn other_ca() -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
    let cert = ca_params().self_signed(&key).expect("ca cert");
    (cert.pem(), key.serialize_pem())
}

/// A client certificate for `agent_id` signed by the CA (`ca_cert_pem`, `ca_key_pem`),
/// valid from `not_before` to `not_after` (days relative to now), with a fresh key.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    agent_id: &str,
    not_before_days: i64,
    not_after_days: i64,
) -> Credentials {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    issue_client_cert_for(
        ca_cert_pem,
        ca_key_pem,
        agent_id,
        &key.serialize_pem(),
        (not_before_days, not_after_days),
    )
}

/// [`issue_client_cert`] for the existing key `key_pem`; `validity_days` is
/// `(not_before, not_after)` relative to now.
pub fn issue_client_cert_for(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    agent_id: &str,
    key_pem: &str,
    validity_days: (i64, i64),
) -> Credentials {
    let (not_before_days, not_after_days) = validity_days;
    let ca_key = KeyPair::from_pem(ca_key_pem).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).expect("issuer");
    let key = KeyPair::from_pem(key_pem).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, agent_id);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(not_before_days);
    params.not_after = now + Duration::days(not_after_days);
    let cert = params.signed_by(&key, &issuer).expect("sign");
    Credentials {
        agent_id: agent_id.to_owned(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A stand-in agent-plane server for testing the daemon side: its own CA, a server
/// certificate for 127.0.0.1, and `Stream` sessions the test drives (every message received
/// is handed over; what the test queues is sent). `Register` is not implemented.
#[derive(Debug)]
pub struct FakePlane {
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    /// The CA's certificate (PEM), which the daemon must trust.
    pub ca_pem: String,
    ca_key_pem: String,
    sessions: mpsc::UnboundedReceiver<FakeSession>,
    task: tokio::task::JoinHandle<()>,
}

/// One `Stream` call on a [`FakePlane`].
#[derive(Debug)]
pub struct FakeSession {
    /// Messages from the daemon.
    pub rx: mpsc::UnboundedReceiver<AgentMessage>,
    /// Messages to the daemon.
    pub tx: mpsc::Sender<Result<ServerMessage, Status>>,
}

#[derive(Clone)]
struct FakeService {
    sessions: mpsc::UnboundedSender<FakeSession>,
}

#[tonic::async_trait]
impl AgentPlane for FakeService {
    async fn register(
        &self,
        _: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<RegisterResponse>, Status> {
        Err(Status::unimplemented("the fake plane does not enroll"))
    }

    type StreamStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn stream(
        &self,
        request: tonic::Request<Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if in_tx.send(m).is_err() {
                    break;
                }
            }
        });
        let session = FakeSession {
            rx: in_rx,
            tx: out_tx,
        };
        self.sessions
            .send(session)
            .map_err(|_| Status::unavailable("the test is gone"))?;
        Ok(tonic::Response::new(ReceiverStream::new(out_rx)))
    }
}

impl FakePlane {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> FakePlane {
        install_provider();
        let (ca_pem, ca_key_pem) = other_ca();
        let ca_key = KeyPair::from_pem(&ca_key_pem).expect("ca key");
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert.pem(), key.serialize_pem()))
            .client_ca_root(Certificate::from_pem(&ca_pem));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let service = AgentPlaneServer::new(FakeService {
            sessions: sessions_tx,
        });
        let router = Server::builder()
            .tls_config(tls)
            .expect("tls config")
            .add_service(service);
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        FakePlane {
            addr,
            ca_pem,
            ca_key_pem,
            sessions,
            task,
        }
    }

    /// A client certificate and key for `agent_id` from this server's CA.
    pub fn credentials(&self, agent_id: &str) -> Credentials {
        issue_client_cert(&self.ca_pem, &self.ca_key_pem, agent_id, -1, 30)
    }

    /// The next `Stream` call, within `timeout`.
    pub async fn session(&mut self, timeout: std::time::Duration) -> Option<FakeSession> {
        tokio::time::timeout(timeout, self.sessions.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for FakePlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSession {
    /// The next message from the daemon within `timeout`; `None` on timeout or when the
    /// stream ended.
    pub async fn recv(&mut self, timeout: std::time::Duration) -> Option<Msg> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(m)) => m.msg,
            _ => None,
        }
    }

    /// Sends `msg` to the daemon.
    pub async fn send(&self, msg: tyr_proto::agent::server_message::Msg) {
        self.tx
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .expect("the daemon's stream is open");
    }
}
