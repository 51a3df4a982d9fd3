//! The `strait` command. Parsing lives in `args`, each verb in `commands`;
//! this file only dispatches and turns errors into exit codes.

#![forbid(unsafe_code)]

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc rather than glibc's allocator: a gateway allocates and frees
/// per stream and per packet on every core, and must hand memory back after
/// a burst of streams closes. glibc kept the freed heap; jemalloc's
/// background thread returns pages unused for a second (the settings are
/// built in from `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
