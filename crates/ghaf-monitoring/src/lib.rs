//! Monitoring service for Ghaf.
//!
//! A monitor watches an endpoint's prediction log (`<endpoint>-predictions`) or any dataset,
//! against a reference dataset version whose drift reference is fitted once and stored as a
//! blob. Each evaluation reads only the segments of its window, and stores a report with drift
//! per feature and for the prediction column, performance per model version once labels
//! arrive, null shares and freshness. Alert rules judge each report. Alerts are deduplicated
//! per rule and subject with a cool-down and delivered to webhooks (HMAC-SHA256 signed), NATS
//! and Kafka, and a rule can submit a retraining job.
//!
//! - [`spec`]: monitor and alert-rule specifications and their validation.
//! - [`data`]: reading dataset versions and selecting the segments of a window.
//! - [`report`]: the evaluation report and its computation.
//! - [`rules`]: judging a report against alert rules.
//! - [`delivery`]: webhook, NATS and Kafka sinks.
//! - [`store`]: the tables of monitors, evaluations, rules, alerts and deliveries.
//! - [`service`]: [`MonitoringService`], which ties them together, and the evaluator loop.

pub mod data;
pub mod delivery;
mod error;
pub mod report;
pub mod rules;
pub mod service;
pub mod spec;
pub mod store;

pub use error::MonitoringError;
pub use service::{MonitoringService, ServiceConfig};
pub use spec::{AlertRuleSpec, Condition, MonitorSpec, Target, Window};
pub use store::{Alert, AlertRule, Delivery, Evaluation, Monitor, MonitorStore};
