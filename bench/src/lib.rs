//! Helpers shared by the benchmark binaries.

/// `--seconds S` from the command line (0 < S <= 60), or `default`.
/// Exits with a message on a bad value: benchmarks are run by hand.
pub fn seconds_arg(default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && *s <= 60.0)
            .unwrap_or_else(|| {
                eprintln!("--seconds takes a number of seconds between 0 and 60");
                std::process::exit(2)
            }),
        None => default,
    }
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The value after `--name` on the command line, if given.
pub fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A child process killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `c` with its output in `log`. Panics rather than exits, so that
/// unwinding stops every process started before.
pub fn spawn_logged(mut c: Command, what: &str, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = c
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    Proc(child)
}

/// The release `strait` binary: `$STRAIT`, else `target/release/strait`.
pub fn strait_binary() -> PathBuf {
    let path = std::env::var_os("STRAIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/strait"));
    if !path.exists() {
        eprintln!(
            "{} not found: build it first (cargo build --release -p strait) or set STRAIT",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// Runs `strait ARGS`, panicking with the command line when it fails.
pub fn run_strait(strait: &Path, args: &[&str]) {
    let ok = Command::new(strait)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "strait {} failed", args.join(" "));
}

/// `strait ca init` of example.org into `dir`.
pub fn init_ca(strait: &Path, dir: &Path) {
    let dir = dir.to_str().unwrap();
    run_strait(
        strait,
        &["ca", "init", "--trust-domain", "example.org", "--dir", dir],
    );
}

/// `strait cert issue --gateway` by the CA in `ca` into `out`.
pub fn issue_gateway(strait: &Path, ca: &Path, region: &str, name: &str, out: &Path) {
    let (ca, out) = (ca.to_str().unwrap(), out.to_str().unwrap());
    run_strait(
        strait,
        &[
            "cert",
            "issue",
            "--ca",
            ca,
            "--gateway",
            "--region",
            region,
            "--name",
            name,
            "--out",
            out,
        ],
    );
}

/// A CA in `dir/ca` and two gateway identities made by `strait` itself:
/// `dir/w` (gw-w in eu-west) and `dir/e` (gw-e in us-east).
pub fn make_certs(strait: &Path, dir: &Path) {
    init_ca(strait, &dir.join("ca"));
    for (region, name, out) in [("eu-west", "gw-w", "w"), ("us-east", "gw-e", "e")] {
        issue_gateway(strait, &dir.join("ca"), region, name, &dir.join(out));
    }
}

/// A process's resident memory (VmRSS) in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1 (bound, read back and released).
pub fn free_tcp() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A UDP port on 127.0.0.1 that is free for TCP too (bound, read back and
/// released): a gateway's tunnel port is also its TCP carrier's. After a
/// burst of thousands of connections most ephemeral ports are still held
/// on TCP, and the carrier could not listen.
pub fn free_udp() -> std::net::SocketAddr {
    for _ in 0..1000 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port on 127.0.0.1 is free for both UDP and TCP");
}

/// GET `path` from a gateway's admin address; the whole answer (status
/// line, headers and body), or empty when nothing answered.
pub async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

/// Waits (up to 30 s) until the gateway at `admin` lists every one of
/// `services` offered by a peer in `/status`.
pub async fn wait_for_services(admin: std::net::SocketAddr, services: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = admin_get(admin, "/status").await;
        if services
            .iter()
            .all(|s| status.contains(&format!("\"name\": \"{s}\"")))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateways never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
