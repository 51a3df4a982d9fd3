//! strait against direct TCP and against a stunnel pair (mutual TLS, one
//! TLS connection per client connection), measured in the same run: bulk
//! throughput with 1 and 16 streams, 64-byte request/response latency on a
//! warm connection, and the time from `connect()` to the first response
//! byte of a new connection; on loopback and through netsim at 80 ms RTT.
//!
//! `cargo run --release -p strait-bench --bin tunnel-compare [-- --quick]`
//!
//! `-- --idle N` instead holds N idle client connections (no byte sent)
//! through each pair and prints each process's resident memory before,
//! while held and after they closed, and how long opening them took.
//!
//! Needs `stunnel4` (Debian). The two strait gateways are this binary
//! re-run as `--gateway CONFIG` (the strait-gateway library on a
//! current-thread runtime, as `strait gateway run` runs it); targets and
//! load run in this process. Everything shares the machine's cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use strait_bench::{free_tcp, free_udp, rss_kib};
use strait_ca::{
    CaOptions, CertificateAuthority, KeyType, Overwrite, SpiffeId, SvidRequest, TrustDomain,
};
use strait_netsim::{LinkConfig, Network, PartitionMode, TcpRelay, UdpRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The gateways this binary runs use the `strait` binary's allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--gateway") {
        run_gateway(Path::new(&args[i + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--idle") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--idle N: a number of connections");
        // --touch B: each connection first echoes B bytes, then idles.
        let touch = args
            .iter()
            .position(|a| a == "--touch")
            .and_then(|i| args.get(i + 1))
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        rt.block_on(idle(n, touch));
        return;
    }
    rt.block_on(compare(quick));
}

/// Gateway mode: what `strait gateway run` does, until stdin closes.
fn run_gateway(config: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = strait_gateway::GatewayConfig::load(config).expect("gateway config");
        let gw = strait_gateway::start(config).await.expect("gateway start");
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 1];
        let _ = stdin.read(&mut buf).await;
        gw.shutdown().await;
    });
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sink: counts bytes until EOF, answers the count as 8 bytes.
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_u64(n).await;
            });
        }
    });
    addr
}

/// Echo: returns every byte.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Where a client connects for each service, per path under test.
#[derive(Clone, Copy)]
struct Path2 {
    sink: SocketAddr,
    echo: SocketAddr,
}

async fn bulk(addr: SocketAddr, streams: usize, duration: Duration) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            let buf = vec![0x33u8; 256 * 1024];
            let t = Instant::now();
            while t.elapsed() < duration {
                s.write_all(&buf).await.ok()?;
            }
            s.shutdown().await.ok()?;
            s.read_u64().await.ok()
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.ok().flatten().unwrap_or(0);
    }
    total as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

async fn request_latency(addr: SocketAddr, n: usize) -> (f64, f64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = [0x42u8; 64];
    let mut resp = [0u8; 64];
    for _ in 0..n.min(20) {
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut resp).await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut resp).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    percentiles(samples)
}

async fn first_byte(addr: SocketAddr, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    percentiles(samples)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

struct Row {
    path: &'static str,
    bulk1: f64,
    bulk16: f64,
    lat: (f64, f64),
    first: (f64, f64),
}

async fn measure(path: &'static str, p: Path2, wan: bool, quick: bool) -> Row {
    let (secs, reqs, conns) = match (wan, quick) {
        (false, false) => (3.0, 2000, 200),
        (false, true) => (1.0, 500, 50),
        (true, false) => (5.0, 40, 10),
        (true, true) => (2.0, 10, 4),
    };
    // STRAIT_BENCH_BULK_SECS overrides the bulk duration.
    let secs = std::env::var("STRAIT_BENCH_BULK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(secs);
    let d = Duration::from_secs_f64(secs);
    Row {
        path,
        bulk1: bulk(p.sink, 1, d).await,
        bulk16: bulk(p.sink, 16, d).await,
        lat: request_latency(p.echo, reqs).await,
        first: first_byte(p.echo, conns).await,
    }
}

fn print(title: &str, rows: &[Row], rtt_ms: Option<f64>) {
    let rtt_ms = rtt_ms.filter(|r| *r > 0.0);
    println!("### {title}");
    println!();
    println!(
        "| path | 1 stream Gbit/s | 16 streams Gbit/s | 64 B req/resp p50 us | p99 us | connect to first byte p50 us | p99 us |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.path, r.bulk1, r.bulk16, r.lat.0, r.lat.1, r.first.0, r.first.1
        );
    }
    println!();
    let find = |name: &str| rows.iter().find(|r| r.path == name);
    if let (Some(s), Some(t)) = (find("strait"), find("stunnel")) {
        println!(
            "- strait / stunnel, 1-stream throughput: {:.2}x",
            s.bulk1 / t.bulk1
        );
        println!("- strait / stunnel, 64 B p99: {:.2}x", s.lat.1 / t.lat.1);
        if let Some(rtt) = rtt_ms {
            println!(
                "- first byte in RTTs (p50): strait {:.2}, stunnel {:.2}, direct TCP {:.2}",
                s.first.0 / 1e3 / rtt,
                t.first.0 / 1e3 / rtt,
                find("direct TCP").map_or(0.0, |d| d.first.0 / 1e3 / rtt)
            );
        }
        println!();
    }
}

async fn compare(quick: bool) {
    if Command::new("stunnel4")
        .arg("-version")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("stunnel4 is not installed: apt-get install stunnel4");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sink, echo) = (sink().await, echo().await);
    let pki = Pki::new(d);
    println!("strait vs direct TCP vs stunnel (mutual TLS 1.3), 2-core machine, same run");
    println!();

    // Loopback.
    let strait = StraitPair::start(d, &pki, sink, echo, None, "lo").await;
    let stunnel = StunnelPair::start(d, &pki, sink, echo, &StunnelPorts::direct(), "lo");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = vec![
        measure("direct TCP", Path2 { sink, echo }, false, quick).await,
        measure("strait", strait.path, false, quick).await,
        measure("stunnel", stunnel.path, false, quick).await,
    ];
    print("loopback", &rows, None);
    drop((strait, stunnel));

    // Through netsim at 80 ms RTT (40 ms each way).
    let regions = ["a", "b"].map(String::from);
    // STRAIT_BENCH_ONE_WAY_MS changes the simulated one-way latency.
    let one_way: u64 = std::env::var("STRAIT_BENCH_ONE_WAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let net = Arc::new(Network::new(&regions, 1, |_, _| LinkConfig {
        latency: Duration::from_millis(one_way),
        ..Default::default()
    }));
    let tcp_relay = |target: SocketAddr| {
        let net = net.clone();
        async move {
            TcpRelay::bind(
                "127.0.0.1:0".parse().unwrap(),
                target,
                net.link("a", "b").unwrap(),
                net.link("b", "a").unwrap(),
                PartitionMode::Stall,
            )
            .await
            .unwrap()
        }
    };
    let direct_sink = tcp_relay(sink).await;
    let direct_echo = tcp_relay(echo).await;
    let strait = StraitPair::start(d, &pki, sink, echo, Some(net.clone()), "wan").await;
    let (server_sink, server_echo) = (free_tcp(), free_tcp());
    let relay_sink = tcp_relay(server_sink).await;
    let relay_echo = tcp_relay(server_echo).await;
    let ports = StunnelPorts {
        server_sink,
        server_echo,
        dial_sink: relay_sink.local_addr(),
        dial_echo: relay_echo.local_addr(),
    };
    let stunnel = StunnelPair::start(d, &pki, sink, echo, &ports, "wan");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = vec![
        measure(
            "direct TCP",
            Path2 {
                sink: direct_sink.local_addr(),
                echo: direct_echo.local_addr(),
            },
            true,
            quick,
        )
        .await,
        measure("strait", strait.path, true, quick).await,
        measure("stunnel", stunnel.path, true, quick).await,
    ];
    print(
        &format!("through netsim, {} ms RTT, no loss", 2 * one_way),
        &rows,
        Some(2.0 * one_way as f64),
    );
    let report = net.report();
    println!(
        "netsim: {} datagrams/chunks delivered, {} dropped (queue full {})",
        report
            .iter()
            .map(|l| l.stats.delivered_packets)
            .sum::<u64>(),
        report.iter().map(|l| l.stats.dropped()).sum::<u64>(),
        report
            .iter()
            .map(|l| l.stats.dropped_queue_full)
            .sum::<u64>(),
    );
}

/// Opens `n` connections to `addr`, 256 at a time, and holds them. With
/// `touch` > 0 each first echoes that many bytes end to end; otherwise
/// they send nothing and only the connect is awaited.
async fn hold(addr: SocketAddr, n: usize, touch: usize) -> (Vec<TcpStream>, Duration) {
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut opened = 0;
    while held.len() < n {
        while opened < n && pending.len() < 256 {
            pending.spawn(async move {
                let mut s = TcpStream::connect(addr).await?;
                if touch > 0 {
                    let data = vec![7u8; touch];
                    let mut back = vec![0u8; touch];
                    s.write_all(&data).await?;
                    s.read_exact(&mut back).await?;
                }
                Ok::<_, std::io::Error>(s)
            });
            opened += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            Some(_) => opened -= 1,
            None => break,
        }
    }
    (held, started.elapsed())
}

/// The idle-connection memory table.
async fn idle(n: usize, touch: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sink, echo) = (sink().await, echo().await);
    let pki = Pki::new(d);
    let strait = StraitPair::start(d, &pki, sink, echo, None, "lo").await;
    let stunnel = StunnelPair::start(d, &pki, sink, echo, &StunnelPorts::direct(), "lo");
    tokio::time::sleep(Duration::from_millis(500)).await;
    if touch > 0 {
        println!(
            "{n} connections through one import, each echoing {touch} bytes then held idle, RSS per process"
        );
    } else {
        println!("{n} idle connections held through one import (no byte sent), RSS per process");
    }
    println!();
    println!(
        "| pair | process | before MiB | held MiB | per connection KiB | after close MiB | open all s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, pair_pids, addr) in [
        ("strait", strait.pids(), strait.path.echo),
        ("stunnel", stunnel.pids(), stunnel.path.echo),
    ] {
        let before: Vec<u64> = pair_pids.iter().map(|(_, p)| rss_kib(*p)).collect();
        let (conns, took) = hold(addr, n, touch).await;
        // Let the far side accept and dial its targets.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during: Vec<u64> = pair_pids.iter().map(|(_, p)| rss_kib(*p)).collect();
        drop(conns);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after: Vec<u64> = pair_pids.iter().map(|(_, p)| rss_kib(*p)).collect();
        for (i, (role, _)) in pair_pids.iter().enumerate() {
            println!(
                "| {name} | {role} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                before[i] as f64 / 1024.0,
                during[i] as f64 / 1024.0,
                (during[i].saturating_sub(before[i])) as f64 / n as f64,
                after[i] as f64 / 1024.0,
                took.as_secs_f64(),
            );
        }
    }
}

/// A CA and two gateway identities.
struct Pki {
    west: PathBuf,
    east: PathBuf,
}

impl Pki {
    fn new(d: &Path) -> Pki {
        let td = TrustDomain::parse("example.org").unwrap();
        let (ca, _) =
            CertificateAuthority::create(&CaOptions::new(td.clone()), SystemTime::now()).unwrap();
        let issue = |region: &str, name: &str| {
            let out = d.join(name);
            let id = SpiffeId::gateway(&td, region, name).unwrap();
            ca.issue(&SvidRequest::new(id), KeyType::P256, SystemTime::now())
                .unwrap()
                .write_to(&out, Overwrite::Never)
                .unwrap();
            out
        };
        Pki {
            west: issue("eu-west", "gw-w"),
            east: issue("us-east", "gw-e"),
        }
    }
}

/// Two strait gateways: west exports sink and echo, east imports them.
struct StraitPair {
    path: Path2,
    _procs: Vec<Proc>,
    _relay: Option<UdpRelay>,
}

impl StraitPair {
    /// (role, pid) of the exporting and the importing gateway.
    fn pids(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("export (west)", self._procs[0].0.id()),
            ("import (east)", self._procs[1].0.id()),
        ]
    }

    async fn start(
        d: &Path,
        pki: &Pki,
        sink: SocketAddr,
        echo: SocketAddr,
        net: Option<Arc<Network>>,
        tag: &str,
    ) -> StraitPair {
        let (wq, eq) = (free_udp(), free_udp());
        let relay = match &net {
            Some(net) => Some(
                UdpRelay::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    wq,
                    net.link("b", "a").unwrap(),
                    net.link("a", "b").unwrap(),
                )
                .await
                .unwrap(),
            ),
            None => None,
        };
        let east_dials = relay.as_ref().map_or(wq, |r| r.local_addr());
        let (isink, iecho) = (free_tcp(), free_tcp());
        let west_admin = free_tcp();
        let east_admin = free_tcp();
        let id = |p: &Path| {
            format!(
                "[identity]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\nbundle = \"{0}/bundle.pem\"\n",
                p.display()
            )
        };
        // STRAIT_BENCH_TUNNEL adds lines to [tunnel], e.g. congestion = "cubic".
        let extra = std::env::var("STRAIT_BENCH_TUNNEL").unwrap_or_default();
        let tunnel = format!("[tunnel]\n{extra}\n");
        let west = format!(
            "[gateway]\nname = \"gw-w\"\nregion = \"eu-west\"\nlisten = \"{wq}\"\nadmin = \"{west_admin}\"\n{}\n{tunnel}\n\
             [[export]]\nservice = \"sink\"\ntarget = \"{sink}\"\n\n[[export]]\nservice = \"echo\"\ntarget = \"{echo}\"\n",
            id(&pki.west)
        );
        let east = format!(
            "[gateway]\nname = \"gw-e\"\nregion = \"us-east\"\nlisten = \"{eq}\"\nadmin = \"{east_admin}\"\n{}\n{tunnel}\n\
             [[peer]]\nregion = \"eu-west\"\naddresses = [\"{east_dials}\"]\n\n\
             [[import]]\nservice = \"sink\"\nlisten = \"{isink}\"\n\n[[import]]\nservice = \"echo\"\nlisten = \"{iecho}\"\n",
            id(&pki.east)
        );
        let mut procs = Vec::new();
        for (name, text) in [("west", west), ("east", east)] {
            let path = d.join(format!("{tag}-{name}.toml"));
            std::fs::write(&path, text).unwrap();
            let child = Command::new(std::env::current_exe().unwrap())
                .arg("--gateway")
                .arg(&path)
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            procs.push(Proc(child));
        }
        wait_for_service(east_admin, "echo").await;
        StraitPair {
            path: Path2 {
                sink: isink,
                echo: iecho,
            },
            _procs: procs,
            _relay: relay,
        }
    }
}

async fn wait_for_service(admin: SocketAddr, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(admin).await {
            let _ = s.write_all(b"GET /status HTTP/1.1\r\n\r\n").await;
            let mut body = String::new();
            let _ = s.read_to_string(&mut body).await;
            if body.contains(&format!("\"name\": \"{service}\"")) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "strait gateways never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stunnel client and server with mutual TLS 1.3, one TLS connection per
/// client connection.
struct StunnelPair {
    path: Path2,
    _procs: Vec<Proc>,
}

/// Where the stunnel server listens, and where the client dials it (the
/// same, or a netsim TCP relay in front of it).
struct StunnelPorts {
    server_sink: SocketAddr,
    server_echo: SocketAddr,
    dial_sink: SocketAddr,
    dial_echo: SocketAddr,
}

impl StunnelPorts {
    fn direct() -> Self {
        let (server_sink, server_echo) = (free_tcp(), free_tcp());
        StunnelPorts {
            server_sink,
            server_echo,
            dial_sink: server_sink,
            dial_echo: server_echo,
        }
    }
}

impl StunnelPair {
    /// (role, pid) of the server and the client.
    fn pids(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("server", self._procs[0].0.id()),
            ("client", self._procs[1].0.id()),
        ]
    }

    fn start(
        d: &Path,
        pki: &Pki,
        sink: SocketAddr,
        echo: SocketAddr,
        ports: &StunnelPorts,
        tag: &str,
    ) -> StunnelPair {
        let (csink, cecho) = (free_tcp(), free_tcp());
        let tls = |p: &Path| {
            format!(
                "cert = {0}/cert.pem\nkey = {0}/key.pem\nCAfile = {0}/bundle.pem\nverifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\n",
                p.display()
            )
        };
        let common = "foreground = yes\npid =\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\ndebug = 3\n";
        let server_conf = format!(
            "{common}\n[sink]\naccept = {}\nconnect = {sink}\n{}\n[echo]\naccept = {}\nconnect = {echo}\n{}",
            ports.server_sink,
            tls(&pki.west),
            ports.server_echo,
            tls(&pki.west)
        );
        let client_conf = format!(
            "{common}\n[sink]\nclient = yes\naccept = {csink}\nconnect = {}\n{}\n[echo]\nclient = yes\naccept = {cecho}\nconnect = {}\n{}",
            ports.dial_sink,
            tls(&pki.east),
            ports.dial_echo,
            tls(&pki.east)
        );
        let mut procs = Vec::new();
        for (name, conf) in [("server", server_conf), ("client", client_conf)] {
            let path = d.join(format!("{tag}-stunnel-{name}.conf"));
            std::fs::write(&path, conf).unwrap();
            let child = Command::new("stunnel4")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            procs.push(Proc(child));
        }
        for addr in [csink, cecho, ports.server_sink, ports.server_echo] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "stunnel did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        StunnelPair {
            path: Path2 {
                sink: csink,
                echo: cecho,
            },
            _procs: procs,
        }
    }
}
