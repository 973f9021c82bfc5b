//! `ghaf`: runs the Ghaf server and talks to it as a client.

mod commands;
mod context;
mod duration;
mod failure;
mod output;
mod profiles;

use std::process::ExitCode;

use clap::Parser;

/// Allocator of the whole binary. Request handling makes many small, short-lived
/// allocations (parsed JSON, keys, rows, response buffers), which mimalloc serves from
/// thread-local free lists. BENCHMARKS.md records the effect on speed and peak memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    failure::exit_quietly_on_closed_pipe();
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure::report(&error),
    }
}
