//! A blocking client of the REST API (SPEC §10) that maps failures to one-line errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::CliError;

/// Timeout of ordinary requests (not of the event stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client trusting only the PEM CA in `ca` when given (else the system roots).
/// `timeout` of `None` means no timeout (the event stream).
pub fn http_client(ca: Option<&Path>, timeout: Option<Duration>) -> Result<Client, CliError> {
    install_crypto_provider();
    let mut builder = Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("tyr/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca {
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("cannot read CA file {}: {e}", path.display())))?;
        let bad = |why: String| CliError::Usage(format!("CA file {}: {why}", path.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("invalid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("invalid certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Failed(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .build()
        .map_err(|e| CliError::Failed(format!("cannot create the HTTP client: {}", chain(&e))))
}

/// Parses and checks a server base URL (`http` or `https`).
pub fn parse_server(url: &str) -> Result<Url, CliError> {
    let parsed =
        Url::parse(url).map_err(|e| CliError::Usage(format!("invalid server URL `{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(CliError::Usage(format!(
            "invalid server URL `{url}`: expected https://HOST[:PORT] or http://HOST[:PORT]"
        )));
    }
    Ok(parsed)
}

/// An error response of the API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code`, or empty when the body was not the API error shape.
    pub code: String,
    /// `error.message`, or the status text.
    pub message: String,
    /// `error.details`.
    pub details: Value,
}

impl ApiError {
    /// The error as one line for the user: the server's message and the HTTP status; a 401
    /// says to log in.
    pub fn into_cli(self) -> CliError {
        let status = match self.code.as_str() {
            "" => format!("HTTP {}", self.status.as_u16()),
            code => format!("HTTP {}, {code}", self.status.as_u16()),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            return CliError::Failed(format!(
                "not logged in: run `tyr login` ({}: {})",
                status, self.message
            ));
        }
        CliError::Failed(format!("{} ({status})", self.message))
    }
}

/// A failed call: the server answered with an error, or the transport failed.
#[derive(Debug)]
pub enum CallError {
    /// An error response.
    Api(Box<ApiError>),
    /// Anything else, already phrased.
    Other(CliError),
}

impl From<CallError> for CliError {
    fn from(e: CallError) -> CliError {
        match e {
            CallError::Api(a) => a.into_cli(),
            CallError::Other(c) => c,
        }
    }
}

/// The error and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// The REST API of one server, optionally with a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    http: Client,
    base: Url,
    token: Option<String>,
}

impl Api {
    /// A client of `base` (e.g. `https://localhost:7701`).
    pub fn new(http: Client, base: Url, token: Option<String>) -> Api {
        Api { http, base, token }
    }

    /// The same client with a bearer token.
    pub fn with_token(self, token: String) -> Api {
        Api {
            token: Some(token),
            ..self
        }
    }

    /// `base` + `/api/v1/` + the percent-encoded `segments` + the query.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// A request with the bearer token when there is one.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request; errors are [`CallError`]s.
    pub fn send(&self, req: RequestBuilder) -> Result<Response, CallError> {
        let resp = req.send().map_err(|e| {
            let url = e
                .url()
                .map_or_else(|| self.base.to_string(), Url::to_string);
            // The top-level message repeats the URL; its sources say what failed.
            let mut why = std::error::Error::source(&e).map_or_else(|| e.to_string(), chain);
            if why.contains("invalid peer certificate") {
                why.push_str(" (pass --ca with the server's CA, as served at /api/v1/ca.pem)");
            }
            CallError::Other(CliError::Failed(format!("cannot reach {url}: {why}")))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        let err = &body["error"];
        Err(CallError::Api(Box::new(ApiError {
            status,
            code: err["code"].as_str().unwrap_or_default().to_owned(),
            message: err["message"].as_str().map_or_else(
                || status.canonical_reason().unwrap_or("error").to_owned(),
                str::to_owned,
            ),
            details: err["details"].clone(),
        })))
    }

    /// Calls `method` on `segments` with an optional JSON body; returns the JSON response
    /// (`null` for an empty one).
    pub fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut req = self.request(method, self.url(segments, query));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req)?;
        let text = resp.text().map_err(|e| {
            CallError::Other(CliError::Failed(format!(
                "reading the response: {}",
                chain(&e)
            )))
        })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            CallError::Other(CliError::Failed(format!(
                "the server sent invalid JSON: {e}"
            )))
        })
    }

    /// `GET`.
    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, CliError> {
        Ok(self.call(Method::GET, segments, query, None)?)
    }

    /// `POST` with a JSON body.
    pub fn post(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        Ok(self.call(Method::POST, segments, &[], Some(body))?)
    }

    /// `PATCH` with a JSON body.
    pub fn patch(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        Ok(self.call(Method::PATCH, segments, &[], Some(body))?)
    }

    /// `DELETE`.
    pub fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        Ok(self.call(Method::DELETE, segments, &[], None)?)
    }
}
