//! Ghaf's metadata store: the catalogue of tenants, projects, principals, tokens, role
//! bindings and the audit log, on SQLite (embedded default) or PostgreSQL.
//!
//! [`Db`] owns the connection pool, the SQL dialect and the migrations; [`MetaStore`] is the
//! storage contract the rest of Ghaf programs against, and [`SqlMetaStore`] implements it on
//! either database. Every method that reads or writes tenant data takes the tenant, so a
//! query across tenants cannot be written by accident.

mod db;
mod direct;
mod error;
mod migrate;
mod sql_store;
mod store;

pub mod conformance;

pub use db::{Db, Dialect, redact_url};
pub use direct::SqliteDirect;
pub use error::MetaError;
pub use migrate::{MIGRATIONS, Migration};
/// The `rusqlite` of [`SqliteDirect`], so callers name the same version of its types.
pub use rusqlite;
pub use sql_store::SqlMetaStore;
pub use store::*;

#[cfg(feature = "testing")]
pub mod testing;
