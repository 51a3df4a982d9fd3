//! A flood of strangers' QUIC handshakes (a certificate of a CA nobody
//! trusts, trusting the gateway's so that it does all of its handshake
//! work) against a real exporting gateway while real streams run through
//! the pair: new connections through the import, 1 KiB echoed, one after
//! another. For each gate setting it prints the handshakes/s the flood
//! got through, what the gateway decided (accept, retry, refuse), the
//! p50/p99 of the real streams before and during the flood, the exporting
//! gateway's CPU during the flood and the log lines it wrote.
//!
//! ```text
//! cargo build --release -p strait -p strait-bench
//! target/release/handshake-flood [--seconds 10] [--concurrency 64] [--gate default,always,strikes,off]
//! ```
//!
//! Gates: `default` ([tunnel] defaults: Retry above 16 handshakes in
//! flight, refuse at 256, an address refused for 10 s after 20 failures in
//! 10 s), `always` (handshake_retry_above = 0), `strikes` (only the
//! per-address refusal), `off` (none: every handshake is worked on at
//! once, as before the gate; the log budget still applies). Everything runs on
//! 127.0.0.1 and stops by itself; the flood and the measured streams share
//! this process, so on a small machine they compete for its cores too.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use strait_bench::{Proc, free_tcp, free_udp, spawn_logged, strait_binary};
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{Identity, PeerRequirement, TrustBundle, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let value = strait_bench::arg_value;
    let seconds: f64 = value("--seconds").map_or(10.0, |v| v.parse().expect("--seconds S"));
    let concurrency: usize =
        value("--concurrency").map_or(64, |v| v.parse().expect("--concurrency N"));
    let gates: Vec<String> = value("--gate")
        .unwrap_or_else(|| "default,always,strikes,off".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let strait = std::fs::canonicalize(strait_binary()).expect("the strait binary");
    let dir = tempfile::tempdir().unwrap();
    certificates(&strait, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{:<8} {:>11} {:>8} {:>8} {:>8} {:>16} {:>16} {:>9} {:>10}",
        "gate",
        "flood hs/s",
        "accept",
        "retry",
        "refuse",
        "p50/p99 before",
        "p50/p99 during",
        "cpu",
        "log lines"
    );
    for gate in &gates {
        let tunnel = match gate.as_str() {
            "default" => "",
            "always" => "handshake_retry_above = 0\n",
            "strikes" => "handshake_retry_above = 1000000\nmax_handshakes = 1000000\n",
            "off" => {
                "handshake_retry_above = 1000000\nmax_handshakes = 1000000\nhandshake_strikes = 0\n"
            }
            other => {
                eprintln!("--gate takes default, always, strikes or off, not {other:?}");
                std::process::exit(2)
            }
        };
        let row = rt.block_on(run(
            &strait,
            dir.path(),
            tunnel,
            Duration::from_secs_f64(seconds),
            concurrency,
        ));
        println!(
            "{gate:<8} {:>11.0} {:>8} {:>8} {:>8} {:>7.1}/{:>5.1} ms {:>7.1}/{:>5.1} ms {:>8.0}% {:>10}",
            row.flood_rate,
            row.accept,
            row.retry,
            row.refuse,
            row.before.0,
            row.before.1,
            row.during.0,
            row.during.1,
            row.cpu * 100.0,
            row.log_lines
        );
    }
}

struct Row {
    flood_rate: f64,
    accept: u64,
    retry: u64,
    refuse: u64,
    /// (p50, p99) in ms.
    before: (f64, f64),
    during: (f64, f64),
    /// Share of one core the exporting gateway used during the flood.
    cpu: f64,
    log_lines: usize,
}

/// A CA and the pair's identities, and a stranger: a gateway certificate
/// of another CA of the same trust domain.
fn certificates(strait: &Path, dir: &Path) {
    strait_bench::make_certs(strait, dir);
    strait_bench::init_ca(strait, &dir.join("other"));
    strait_bench::issue_gateway(
        strait,
        &dir.join("other"),
        "us-east",
        "gw-x",
        &dir.join("x"),
    );
}

async fn run(
    strait: &Path,
    dir: &Path,
    tunnel: &str,
    duration: Duration,
    concurrency: usize,
) -> Row {
    let target = echo_target().await;
    let (wq, eq, wa, ea, import) = (free_udp(), free_udp(), free_tcp(), free_tcp(), free_tcp());
    let identity = |who: &str| {
        format!(
            "[identity]\ncert = \"{who}/cert.pem\"\nkey = \"{who}/key.pem\"\nbundle = \"{who}/bundle.pem\"\n"
        )
    };
    let west = format!(
        "[gateway]\nregion = \"eu-west\"\nlisten = \"{wq}\"\nadmin = \"{wa}\"\n{}[tunnel]\n{tunnel}\n\
         [[export]]\nservice = \"echo\"\ntarget = \"{target}\"\n",
        identity("w")
    );
    let east = format!(
        "[gateway]\nregion = \"us-east\"\nlisten = \"{eq}\"\nadmin = \"{ea}\"\n{}\
         [[peer]]\nregion = \"eu-west\"\naddresses = [\"{wq}\"]\n\n\
         [[import]]\nservice = \"echo\"\nlisten = \"{import}\"\n",
        identity("e")
    );
    let mut procs: Vec<Proc> = Vec::new();
    for (name, text) in [("west", &west), ("east", &east)] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let mut c = Command::new(strait);
        c.args(["gateway", "run", "--config"])
            .arg(&config)
            .current_dir(dir);
        procs.push(spawn_logged(
            c,
            "strait gateway",
            &dir.join(format!("{name}.log")),
        ));
    }
    let west_pid = procs[0].0.id();
    let west_log = dir.join("west.log");
    strait_bench::wait_for_services(ea, &["echo".to_owned()]).await;

    let before = latencies(import, duration).await;
    let log_before = refusal_lines(&west_log);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let endpoint = stranger(&dir.join("x"), &dir.join("w/bundle.pem"));
    let mut flood = Vec::new();
    for _ in 0..concurrency {
        let (endpoint, stop, done) = (endpoint.clone(), stop.clone(), done.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(connecting) = endpoint.connect(wq, "gateway")
                    && let Ok(Ok(conn)) =
                        tokio::time::timeout(Duration::from_secs(2), connecting).await
                {
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let cpu_start = cpu_seconds(west_pid);
    let flood_start = Instant::now();
    let during = latencies(import, duration).await;
    let cpu = (cpu_seconds(west_pid) - cpu_start) / flood_start.elapsed().as_secs_f64();
    let flood_rate = done.load(Ordering::Relaxed) as f64 / flood_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let metrics = strait_bench::admin_get(wa, "/metrics").await;
    let decision = |d: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("strait_handshakes_total") && l.contains(&format!("decision=\"{d}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let row = Row {
        flood_rate,
        accept: decision("accept"),
        retry: decision("retry"),
        refuse: decision("refuse"),
        before: percentiles(before),
        during: percentiles(during),
        cpu,
        log_lines: refusal_lines(&west_log) - log_before,
    };
    endpoint.close(0u32.into(), b"");
    drop(procs);
    row
}

/// A QUIC client that trusts `bundle` but presents the identity in `dir`.
fn stranger(dir: &Path, bundle: &Path) -> quinn::Endpoint {
    let identity = Identity::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let bundle = TrustBundle::load(bundle).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let verifier = Arc::new(SvidVerifier::new(bundle, PeerRequirement::Gateway(td)));
    let tls = client_config(&identity, verifier, &[b"strait/1"]).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
}

/// Opens a connection through `import`, echoes 1 KiB, closes it, again and
/// again for `duration`; the latency of each in ms.
async fn latencies(import: SocketAddr, duration: Duration) -> Vec<f64> {
    let end = Instant::now() + duration;
    let mut out = Vec::new();
    let block = [7u8; 1024];
    while Instant::now() < end {
        let start = Instant::now();
        let ok = async {
            let mut s = TcpStream::connect(import).await?;
            s.write_all(&block).await?;
            let mut back = [0u8; 1024];
            s.read_exact(&mut back).await?;
            std::io::Result::Ok(())
        };
        if tokio::time::timeout(Duration::from_secs(5), ok)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            out.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    out
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

async fn echo_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn refusal_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("refused"))
        .count()
}

/// User and system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime), counted after the ")".
    (ticks(11) + ticks(12)) / 100.0
}
