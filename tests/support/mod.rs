//! Shared helpers for integration tests: run the real `strait` binary in a
//! temporary directory and read what it said.

#![allow(dead_code)]

pub mod mesh;
pub mod podman;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A small runtime for a test's netsim relays (the gateways under test are
/// processes of their own).
pub fn relay_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The `strait` binary cargo built for these tests.
pub fn strait_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strait"))
}

/// The outcome of one command: exit status and both streams as text.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both streams when the command failed.
    pub fn ok(self) -> Run {
        assert!(self.success, "command failed: {self:#?}");
        self
    }

    /// Panics when the command succeeded; returns stderr for checking.
    pub fn failed(self) -> String {
        assert!(!self.success, "command should have failed: {self:#?}");
        self.stderr
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `strait` in `dir` with a command line split on white space.
pub fn strait(dir: &Path, command_line: &str) -> Run {
    strait_argv(dir, &command_line.split_whitespace().collect::<Vec<_>>())
}

/// Runs `strait ARGS...` in `dir`, for arguments that hold spaces.
pub fn strait_argv(dir: &Path, args: &[&str]) -> Run {
    Command::new(strait_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot start the strait binary")
        .into()
}

/// Runs a command line (split on white space) in `dir`; a missing program
/// fails the test with its name.
pub fn run(dir: &Path, command_line: &str) -> Run {
    let mut words = command_line.split_whitespace();
    let program = words.next().expect("empty command line");
    Command::new(program)
        .args(words)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"))
        .into()
}

/// A CA in `dir/ca` and a gateway certificate in `dir/<name>`.
pub fn ca_and_gateway(dir: &Path, intermediate: bool, region: &str, name: &str) {
    let extra = if intermediate { "--intermediate" } else { "" };
    strait(
        dir,
        &format!("ca init --trust-domain example.org --dir ca {extra}"),
    )
    .ok();
    strait(
        dir,
        &format!("cert issue --ca ca --gateway --region {region} --name {name} --out {name}"),
    )
    .ok();
}
