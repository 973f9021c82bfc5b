//! Typed async client of the Ghaf HTTP API (`/api/v1`).
//!
//! ```no_run
//! # async fn example() -> Result<(), ghaf_client::ClientError> {
//! let client = ghaf_client::Client::new("http://127.0.0.1:8080", Some("ghaf_…".into()))?;
//! let projects = client.list_projects().await?.value;
//! for project in projects.projects {
//!     println!("{}", project.name);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Experiments, runs, metrics, artifacts and model versions are reached through
//! [`Client::tracking`], which returns a [`Tracking`] handle for one project with typed
//! methods (types in [`mlflow`]).
//!
//! Every method of [`Client`] returns an [`ApiResponse`] with the decoded value, the body text as the server
//! sent it and the request id. Error statuses become [`ClientError::Api`] with the server's
//! error code and message.

mod client;
mod error;
pub mod mlflow;
pub mod views;

pub use client::{
    ApiResponse, CONNECT_TIMEOUT, Client, PROJECT_HEADER, REQUEST_TIMEOUT, RunSearch, Tracking,
    UPLOAD_TIMEOUT, USER_AGENT,
};
pub use error::{ClientError, REQUEST_ID_HEADER, api_error};
pub use views::*;
