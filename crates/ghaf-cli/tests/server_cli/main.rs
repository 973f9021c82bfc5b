//! `ghaf` commands end to end against a real server started as a child process: one test
//! binary, so the helpers and the build are shared.

mod datasets;
mod features;
mod server;
