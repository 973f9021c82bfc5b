//! The Ghaf server: configuration, the HTTP API over the domain crates, and start-up.
//!
//! Handlers are thin: they decode the request, call a service from a domain crate and
//! convert the result. Authentication, authorisation and auditing happen once, in the route
//! guard, for every route the registry declares.

pub mod api;
pub mod app;
pub mod config;
pub mod consumers;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod metrics;
pub mod middleware;
pub mod oip;
pub mod openapi;
pub mod state;
pub mod telemetry;

pub use app::{
    bind, bootstrap, open_state, print_bootstrap, route_table, router, serve, serve_with,
    shutdown_signal, warm_online_store,
};
pub use config::{ConfigOverrides, LogFormat, ServerConfig};
pub use state::AppState;
