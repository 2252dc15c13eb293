//! `tyr-server`, the Tyr control plane: REST API (axum), agent plane (gRPC, later), internal
//! CA and storage on SQLite or PostgreSQL. `main.rs` only parses the command line.

pub mod app;
pub mod auth;
pub mod config;
pub mod drift;
pub mod fleet;
pub mod grpc;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod pki;
pub mod ratelimit;
pub mod rest;
pub mod retention;
pub mod store;
