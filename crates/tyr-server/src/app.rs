//! Startup and shutdown: open/migrate the database, load or create keys, seed the bootstrap
//! token, bind and serve REST (HTTPS by default); drain within 10 s on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::keys::{self, KeyError, Keys};
use crate::ratelimit::LoginLimiter;
use crate::rest::{self, AppState};
use crate::store::time::now_ms;
use crate::store::tokens::NewToken;
use crate::store::{Store, StoreError};

/// Time allowed for in-flight requests at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the token seeded from `TYR_BOOTSTRAP_ENROLLMENT_TOKEN`.
const BOOTSTRAP_TOKEN_DAYS: i64 = 365;
/// Registrations allowed with the bootstrap token.
const BOOTSTRAP_TOKEN_USES: i64 = 1000;

/// Why the server could not start (the binary exits 1 with this message).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or a key file.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The database is unreachable or its migration failed.
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// TLS configuration from the server certificate failed.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot watch shutdown signals: {0}")]
    Signal(std::io::Error),
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The REST listener's address.
    pub rest_addr: SocketAddr,
    /// The store, shared with later listeners (gRPC).
    pub store: Store,
    /// Live events, notices and metrics, shared with later listeners (gRPC).
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The agent plane (gRPC) listener's address.
    pub grpc_addr: SocketAddr,
    grpc: crate::grpc::GrpcServer,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within [`DRAIN_TIMEOUT`], closes the
    /// database.
    pub async fn shutdown(self) {
        self.fleet.close_streams();
        self.grpc.shutdown().await;
        self.handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "REST server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "REST server task failed"),
        }
        self.store.close().await;
    }
}

async fn seed_bootstrap_token(store: &Store, token: &str) -> Result<(), StoreError> {
    let inserted = store
        .seed_enrollment_token(
            token,
            NewToken {
                label: "bootstrap",
                max_uses: BOOTSTRAP_TOKEN_USES,
                expires_at: now_ms() + BOOTSTRAP_TOKEN_DAYS * 86_400_000,
                created_by: None,
            },
        )
        .await?;
    if inserted {
        tracing::info!("seeded the bootstrap enrollment token");
    }
    Ok(())
}

fn tls_config(keys: &Keys) -> Result<RustlsConfig, StartError> {
    let tls = |e: &dyn std::fmt::Display| StartError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(keys.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(keys.server_key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(cfg)))
}

/// Starts the server: database, keys, bootstrap token, then the REST listener.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    install_crypto_provider();
    keys::ensure_data_dir(&config.data_dir)?;
    keys::check_permissions(&config.data_dir)?;
    let store = Store::connect(&config.database_url).await?;
    tracing::info!(backend = ?store.backend(), "database ready");
    let keys = keys::load_or_create(&config.data_dir, &config.server_names)?;
    if let Some(token) = &config.bootstrap_enrollment_token {
        seed_bootstrap_token(&store, token).await?;
    }
    crate::retention::spawn(store.clone(), config.event_retention_days);

    let fleet = Arc::new(crate::fleet::Fleet::default());
    let state = AppState {
        store: store.clone(),
        jwt: JwtKeys::new(&keys.jwt_secret),
        ca_pem: Arc::from(keys.ca.cert_pem()),
        login_limiter: Arc::new(LoginLimiter::new(config.failure_window)),
        fleet: fleet.clone(),
    };
    let app = rest::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let register_limiter = Arc::new(LoginLimiter::new(config.failure_window));
    let grpc = crate::grpc::start(
        config.grpc_bind,
        &keys,
        store.clone(),
        fleet.clone(),
        register_limiter,
    )?;

    let addr = config.rest_bind;
    let bind_err = |source| StartError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let rest_addr = listener.local_addr().map_err(bind_err)?;
    let handle = Handle::new();
    let task = if config.rest_no_tls {
        let server = axum_server::from_tcp(listener)
            .map_err(bind_err)?
            .handle(handle.clone());
        tokio::spawn(server.serve(app))
    } else {
        let server = axum_server::from_tcp_rustls(listener, tls_config(&keys)?)
            .map_err(bind_err)?
            .handle(handle.clone());
        tokio::spawn(server.serve(app))
    };
    tracing::info!(addr = %rest_addr, tls = !config.rest_no_tls, "REST API listening");
    Ok(Running {
        rest_addr,
        store,
        fleet,
        grpc_addr: grpc.addr,
        grpc,
        handle,
        task,
    })
}

/// Resolves at SIGTERM or SIGINT. Registered before startup so that an early signal is not
/// lost to the default disposition.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    let signal = shutdown_signal().map_err(StartError::Signal)?;
    let running = start(&config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
