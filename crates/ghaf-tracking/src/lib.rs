//! Experiment tracking and the model registry of Ghaf: experiments, runs with params, tags
//! and full metric histories, artifacts in the blob store, logged models, registered models
//! with versions, aliases and stages, and signed artifact manifests.
//!
//! [`TrackingStore`] is the storage contract and [`SqlTrackingStore`] implements it on SQLite
//! and PostgreSQL through [`ghaf_meta::Db`]. [`TrackingService`] adds what needs more than
//! the database: artifact content in the blob store and Ed25519 signing of model versions.
//! Every operation takes a [`Scope`], one project of one tenant, so no query can cross
//! projects. This crate has no HTTP in it.

pub mod conformance;
mod error;
pub mod filter;
pub mod manifest;
mod model;
mod service;
mod sql;
mod store;

pub use error::TrackingError;
pub use manifest::{ArtifactManifest, FileKeyStore, ManifestEntry, SignedManifest};
pub use model::*;
pub use service::{
    ARTIFACT_SCHEME, ArtifactContent, DirEntry, RegisterVersion, TrackingService,
    artifact_uri_path, validate_artifact_path,
};
pub use sql::SqlTrackingStore;
pub use store::TrackingStore;
