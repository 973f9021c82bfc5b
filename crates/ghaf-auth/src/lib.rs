//! Identity, authorisation and audit for Ghaf.
//!
//! - [`token`]: API token format, generation and hashing (only hashes are stored).
//! - [`policy`]: the deny-by-default action table and the [`Caller`] that checks it.
//! - [`service`]: tenancy operations (bootstrap, projects, principals, tokens, role grants).
//! - [`audit`]: verification of the hash-chained audit log.

pub mod audit;
pub mod policy;
pub mod service;
pub mod token;

mod error;

pub use error::{AuthError, Subject};
pub use policy::{Action, ActionScope, Caller};
pub use service::{Bootstrap, IssuedToken, TenancyService, TokenRequest};
