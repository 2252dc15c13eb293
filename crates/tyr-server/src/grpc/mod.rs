//! The agent plane (SPEC §5): the `AgentPlane` gRPC service that daemons connect to.
//!
//! Always TLS with the server certificate. Client certificates from the internal CA are
//! verified when presented but optional at the TLS layer, so that `Register` can be called
//! without one; `Stream` then demands one ([`peer_agent_id`]) and a live daemon record.

mod register;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tyr_proto::agent::agent_plane_server::{AgentPlane, AgentPlaneServer};
use tyr_proto::agent::{AgentMessage, RegisterRequest, RegisterResponse, ServerMessage};

use crate::app::{DRAIN_TIMEOUT, StartError};
use crate::fleet::Fleet;
use crate::keys::Keys;
use crate::pki::Ca;
use crate::ratelimit::LoginLimiter;
use crate::store::Store;

/// Interval of HTTP/2 keepalive pings; a daemon that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is dropped.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The service state shared by every call.
#[derive(Debug, Clone)]
pub struct Plane {
    store: Store,
    fleet: Arc<Fleet>,
    ca: Arc<Ca>,
    /// Failed registrations per source address.
    register_limiter: Arc<LoginLimiter>,
    /// Flips to `true` at shutdown: live sessions end.
    stopping: watch::Receiver<bool>,
}

impl Plane {
    fn count(&self, method: &str, result: &Result<impl Sized, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.fleet
            .metrics
            .grpc_request(method, &format!("{code:?}"));
    }
}

#[tonic::async_trait]
impl AgentPlane for Plane {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let result = register::register(self, peer, request.into_inner()).await;
        self.count("Register", &result);
        result.map(Response::new)
    }

    type StreamStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let result = session::open(self, request).await;
        self.count("Stream", &result);
        result.map(|rx: mpsc::Receiver<_>| Response::new(ReceiverStream::new(rx)))
    }
}

/// The agent id in the verified client certificate of the call; `UNAUTHENTICATED` when the
/// caller presented none (rustls has already refused certificates not from the CA).
pub fn peer_agent_id<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let id = crate::pki::agent_id_of(certs[0].as_ref())
        .ok_or_else(|| Status::unauthenticated("the client certificate names no agent"))?;
    uuid::Uuid::parse_str(&id)
        .map(|u| u.to_string())
        .map_err(|_| Status::unauthenticated("the client certificate names no agent"))
}

/// The running gRPC listener.
#[derive(Debug)]
pub struct GrpcServer {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Ends every session, stops accepting and waits up to [`DRAIN_TIMEOUT`] for connections
    /// to close.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(DRAIN_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("gRPC connections still open after the drain timeout"),
        }
    }
}

/// Binds `addr` and serves the agent plane with TLS from `keys`; failed registrations are
/// counted by `register_limiter`.
pub fn start(
    addr: SocketAddr,
    keys: &Keys,
    store: Store,
    fleet: Arc<Fleet>,
    register_limiter: Arc<LoginLimiter>,
) -> Result<GrpcServer, StartError> {
    let tls = |e: &dyn std::fmt::Display| StartError::Tls(format!("gRPC: {e}"));
    let ca = Ca::from_pem(keys.ca.cert_pem(), keys.ca.key_pem()).map_err(|e| tls(&e))?;
    let tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &keys.server_cert_pem,
            &keys.server_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(keys.ca.cert_pem()))
        .client_auth_optional(true);
    let bind_err = |source| StartError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_err)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let (stop, stopping) = watch::channel(false);
    let plane = Plane {
        store,
        fleet,
        ca: Arc::new(ca),
        register_limiter,
        stopping: stopping.clone(),
    };
    let router = Server::builder()
        .tls_config(tls_config)
        .map_err(|e| tls(&e))?
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(AgentPlaneServer::new(plane));
    let mut stopped = stopping;
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    tracing::info!(addr = %local, "agent plane (gRPC, mTLS) listening");
    Ok(GrpcServer {
        addr: local,
        stop,
        task,
    })
}
