//! Rollouts of Ghaf endpoints: the canary controller, the A/B analysis, the evidence of
//! every decision in the tenant's audit chain, and endpoints that follow a model alias.
//!
//! - [`canary`]: the canary state machine, pure and driven by the caller's clock.
//! - [`measure`]: window counters, error rate and latency quantiles of a variant.
//! - [`stats`]: the significance tests of the A/B analysis.
//! - [`analysis`]: the A/B analysis of an endpoint's variants.
//! - [`quality`]: logged predictions joined with labels, per variant.
//! - [`evidence`]: audit entries of decisions and an endpoint's history.
//! - [`service`]: [`RolloutService`] (manual actions, controller pass, analysis) and the
//!   [`RolloutController`] loop.

pub mod analysis;
pub mod canary;
mod error;
pub mod evidence;
pub mod measure;
pub mod quality;
pub mod service;
pub mod stats;

pub use error::RolloutError;
pub use service::{AnalysisRequest, RolloutController, RolloutService, StartRequest, TickSummary};
