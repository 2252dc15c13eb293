//! The REST API. Every route is declared once in a resource module's `routes()` as a
//! [`RouteSpec`] with its [`Access`]; [`router`] builds the axum router from [`routes`] and
//! wraps each non-public route in the single [`guard`] that authenticates the bearer token
//! and enforces the role. Tests enumerate [`routes`] to check every admin route.

pub mod agents;
pub mod assignments;
pub mod auth;
pub mod discovered;
pub mod error;
pub mod events;
pub mod health;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod policies;
pub mod query;
pub mod stats;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::auth::{JwtKeys, Role};
use crate::ratelimit::LoginLimiter;
use crate::store::Store;
use crate::store::users::User;
use error::ApiError;

/// Default limit of request bodies; a route may raise it with its own `DefaultBodyLimit` layer.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// JWT signing/verification.
    pub jwt: JwtKeys,
    /// PEM of the CA certificate.
    pub ca_pem: Arc<str>,
    /// Failed-login limiter.
    pub login_limiter: Arc<LoginLimiter>,
    /// Live events, agent-plane notices, effective-policy cache, metrics.
    pub fleet: Arc<crate::fleet::Fleet>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Any authenticated user.
    Viewer,
    /// Admins only.
    Admin,
}

/// The authenticated caller, inserted by [`guard`] into the request extensions of every
/// non-public route. Handlers take it as `Extension<Caller>`.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

/// One route: method, path (axum syntax, `{id}` for parameters), access and handler.
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path, e.g. `/api/v1/users/{id}`.
    pub path: &'static str,
    /// Required access.
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl RouteSpec {
    /// Declares a route. `method` must be GET, POST, PUT, PATCH or DELETE.
    pub fn new<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> RouteSpec
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        RouteSpec {
            method,
            path,
            access,
            handler: on(filter, handler),
        }
    }
}

/// Every route of the API. Add a resource module's `routes()` here.
pub fn routes() -> Vec<RouteSpec> {
    [
        health::routes(),
        auth::routes(),
        users::routes(),
        tokens::routes(),
        policies::routes(),
        assignments::routes(),
        agents::routes(),
        discovered::routes(),
        events::routes(),
        stats::routes(),
        metrics::routes(),
        openapi::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Builds the router over [`routes`], with the body limit and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for spec in routes() {
        let handler = match spec.access {
            Access::Public => spec.handler,
            access => spec.handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), access),
                guard,
            )),
        };
        r = r.route(spec.path, handler);
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Authenticates the bearer token (signature, HS256 only, expiry, user still exists) and
/// enforces the route's role: 401 without a valid token, 403 for a viewer on an admin route.
async fn guard(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
    let claims = state
        .jwt
        .verify(token)
        .map_err(|_| ApiError::unauthenticated("invalid or expired token"))?;
    let user = state
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the token's user no longer exists"))?;
    if access == Access::Admin && user.role != Role::Admin {
        return Err(ApiError::forbidden("admin role required"));
    }
    req.extensions_mut().insert(Caller(user));
    Ok(next.run(req).await)
}
