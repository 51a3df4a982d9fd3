//! One stream across a long fat path: kernel TCP, a stunnel pair and a
//! strait gateway pair, each with iperf3 as client and server, crossing the
//! *same* emulated link, plus strait on loopback for scale.
//!
//! ```text
//! apt-get install iperf3 stunnel4 curl
//! cargo build --release -p strait -p strait-bench
//! target/release/fat-path [--seconds S] [--runs N] [--loss PERCENT]
//! ```
//!
//! As root, it creates network namespaces `fatpath-a` and `fatpath-b`, a
//! TUN device in each (netsim's IP link: 40 ms each way, 80 ms RTT, no rate
//! limit, optionally random loss) and raises `tcp_rmem`/`tcp_wmem` to 64 MiB
//! inside both, as one would for such a path. iperf3's server and the
//! exporting ends live in `fatpath-b`, the client and the importing ends in
//! `fatpath-a`. strait runs as `strait gateway run --config` from
//! `target/release/strait` (or `$STRAIT`); `STRAIT_BENCH_TUNNEL` adds lines
//! to both gateways' `[tunnel]` section. The loopback row runs both gateways
//! and iperf3 inside `fatpath-a`'s own loopback. Everything is bounded in
//! time, and the namespaces are deleted at exit, also on failure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_bench::{make_certs, spawn_logged};
use strait_netsim::tun::{NamespacePair, TunLink, effective_uid, open_tun};
use strait_netsim::{Link, LinkConfig, SharedLink};

const A: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
const TCP_MEM: &str = "4096 131072 67108864";
const IPERF: u16 = 5201;
const IPERF_LOOP: u16 = 5202;

/// Panics rather than exits, so that unwinding stops every process and
/// deletes the namespaces.
fn fail(msg: &str) -> ! {
    panic!("fat-path: {msg}")
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fail(&format!("{name} takes a number"))),
        None => default,
    }
}

fn main() {
    let seconds: u64 = arg("--seconds", 10).clamp(1, 60);
    let runs: usize = arg("--runs", 3).clamp(1, 9);
    let loss: f64 = arg("--loss", 0.0f64).clamp(0.0, 50.0);
    let uid = effective_uid();
    if uid != 0 {
        eprintln!("fat-path: skipped: needs root for network namespaces and TUN (uid {uid})");
        std::process::exit(2);
    }
    let strait = PathBuf::from(std::env::var("STRAIT").unwrap_or("target/release/strait".into()));
    let strait = std::fs::canonicalize(&strait).unwrap_or_else(|_| {
        fail(&format!(
            "{} missing: cargo build --release -p strait",
            strait.display()
        ))
    });
    for tool in ["iperf3", "stunnel4", "curl"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            fail(&format!(
                "missing {tool}: apt-get install iperf3 stunnel4 curl"
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_certs(&strait, dir);

    // Declared first, dropped last: every process below is gone before the
    // namespaces are deleted.
    let ns = NamespacePair::create("fatpath", A, B)
        .unwrap_or_else(|e| fail(&format!("namespaces: {e}")));
    let link = LinkConfig {
        latency: Duration::from_millis(40),
        loss: loss / 100.0,
        queue_bytes: 64 << 20,
        ..Default::default()
    };
    let a_to_b: SharedLink = Arc::new(Mutex::new(Link::new(link.clone(), 1)));
    let b_to_a: SharedLink = Arc::new(Mutex::new(Link::new(link, 2)));
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let forwarder = {
        let (a_to_b, b_to_a) = (a_to_b.clone(), b_to_a.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opened =
                    open_tun("fatpath-a", 1500).and_then(|a| Ok((a, open_tun("fatpath-b", 1500)?)));
                let (a, b) = match opened {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _link = TunLink::start(a, b, a_to_b, b_to_a, 256 << 20);
                let _ = ready_tx.send(Ok(()));
                // Park until main says stop, without blocking the runtime.
                while stop_rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        })
    };
    if let Err(e) = ready_rx.recv().unwrap_or(Err("forwarder died".into())) {
        fail(&format!("TUN devices: {e}"));
    }
    ns.attach("fatpath-a", &ns.a, A, B)
        .unwrap_or_else(|e| fail(&e.to_string()));
    ns.attach("fatpath-b", &ns.b, B, A)
        .unwrap_or_else(|e| fail(&e.to_string()));
    for n in [&ns.a, &ns.b] {
        for key in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
            ns.sysctl(n, key, TCP_MEM)
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
    }

    let mut procs = Vec::new();
    let mut iperf = ns.command(&ns.b, "iperf3");
    iperf.args(["-s", "-p", &IPERF.to_string()]);
    procs.push(spawn_logged(
        iperf,
        "iperf3 server",
        &dir.join("iperf-b.log"),
    ));
    let mut iperf = ns.command(&ns.a, "iperf3");
    iperf.args(["-s", "-B", "127.0.0.1", "-p", &IPERF_LOOP.to_string()]);
    procs.push(spawn_logged(
        iperf,
        "iperf3 loopback server",
        &dir.join("iperf-a.log"),
    ));

    // stunnel: client end in a, server end in b, mutual TLS 1.3.
    stunnel_conf(
        dir,
        "st-client",
        "w",
        true,
        "127.0.0.1:6001",
        &format!("{B}:6002"),
    );
    stunnel_conf(
        dir,
        "st-server",
        "e",
        false,
        &format!("{B}:6002"),
        &format!("127.0.0.1:{IPERF}"),
    );
    for (n, name) in [(&ns.a, "st-client"), (&ns.b, "st-server")] {
        let mut c = ns.command(n, "stunnel4");
        c.arg(dir.join(format!("{name}.conf")));
        procs.push(spawn_logged(c, "stunnel", &dir.join(format!("{name}.log"))));
    }

    // strait across the link: east in b exports iperf, west in a imports it.
    let extra = std::env::var("STRAIT_BENCH_TUNNEL").unwrap_or_default();
    write_gateways(
        dir,
        "path",
        &format!("{B}:15443"),
        &format!("{A}:15443"),
        IPERF,
        6003,
        &extra,
    );
    write_gateways(
        dir,
        "loop",
        "127.0.0.1:16443",
        "127.0.0.1:16444",
        IPERF_LOOP,
        6004,
        &extra,
    );
    for (n, cfg) in [
        (&ns.b, "path-east"),
        (&ns.a, "path-west"),
        (&ns.a, "loop-east"),
        (&ns.a, "loop-west"),
    ] {
        let mut c = ns.command(n, strait.to_str().unwrap());
        c.args(["gateway", "run", "--config"])
            .arg(dir.join(format!("{cfg}.toml")))
            .current_dir(dir)
            .env("RUST_LOG", "warn");
        procs.push(spawn_logged(
            c,
            "strait gateway",
            &dir.join(format!("{cfg}.log")),
        ));
    }
    for (admin, what) in [
        (15001, "strait across the link"),
        (16001, "strait on loopback"),
    ] {
        if !wait_up(&ns, admin) {
            let logs = ["path-east", "path-west", "loop-east", "loop-west"]
                .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default());
            fail(&format!(
                "{what}: tunnel not up in 15 s\n{}",
                logs.join("\n")
            ));
        }
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fat-path: {seconds} s per run, {runs} runs, 80 ms RTT, loss {loss}%, load before: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rows: [(&str, &str, u16); 4] = [
        ("kernel TCP, tcp_rmem/wmem max 64 MiB", "10.251.0.2", IPERF),
        ("stunnel pair", "127.0.0.1", 6001),
        ("strait pair", "127.0.0.1", 6003),
        ("strait pair, loopback (no link)", "127.0.0.1", 6004),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..runs {
        // Interleaved, so a change in the machine's load hits every row.
        for (i, (_, host, port)) in rows.iter().enumerate() {
            let g = iperf_client(&ns, host, *port, seconds, dir);
            eprintln!("  {} run: {g:.2} Gbit/s", rows[i].0);
            results[i].push(g);
        }
    }
    let med: Vec<f64> = results.iter().map(|r| median(r)).collect();
    println!();
    println!("| path (1 stream, iperf3 {seconds} s) | Gbit/s, runs | median | vs kernel TCP |");
    println!("|---|---|---:|---:|");
    for (i, (name, _, _)) in rows.iter().enumerate() {
        let runs: Vec<String> = results[i].iter().map(|g| format!("{g:.2}")).collect();
        let ratio = if i < 3 && med[0] > 0.0 {
            format!("{:.2}x", med[i] / med[0])
        } else {
            String::new()
        };
        println!("| {name} | {} | {:.2} | {ratio} |", runs.join(", "), med[i]);
    }
    println!();
    if med[3] > 0.0 {
        println!(
            "strait across the link / strait on loopback: {:.0}% (target 60%)",
            100.0 * med[2] / med[3]
        );
    }
    for (name, l) in [("a->b", &a_to_b), ("b->a", &b_to_a)] {
        let s = l.lock().unwrap().stats().clone();
        println!(
            "link {name}: {} packets delivered, {} dropped by loss, {} by a full queue",
            s.delivered_packets, s.dropped_loss, s.dropped_queue_full
        );
    }
    drop(procs);
    let _ = stop_tx.send(());
    let _ = forwarder.join();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One iperf3 client run in namespace a; received Gbit/s (0 on failure).
fn iperf_client(ns: &NamespacePair, host: &str, port: u16, seconds: u64, dir: &Path) -> f64 {
    let mut c = ns.command(&ns.a, "iperf3");
    c.args([
        "-c",
        host,
        "-p",
        &port.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
    ])
    .args(["--connect-timeout", "5000"]);
    let out = dir.join("iperf-client.json");
    let mut p = spawn_logged(c, "iperf3 client", &out);
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    loop {
        match p.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                eprintln!("  iperf3 client to {host}:{port} timed out");
                return 0.0;
            }
        }
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match json["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) => bps / 1e9,
        None => {
            eprintln!("  iperf3 to {host}:{port}: {}", json["error"]);
            0.0
        }
    }
}

/// Polls the importing gateway's /status (inside namespace a) for a peer
/// that is up.
fn wait_up(ns: &NamespacePair, admin: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = ns
            .command(&ns.a, "curl")
            .args(["-s", "-m", "1", &format!("http://127.0.0.1:{admin}/status")])
            .output();
        if let Ok(o) = out
            && String::from_utf8_lossy(&o.stdout)
                .replace([' ', '\n'], "")
                .contains("\"state\":\"up\"")
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn stunnel_conf(dir: &Path, name: &str, certs: &str, client: bool, accept: &str, connect: &str) {
    let c = dir.join(certs);
    let text = format!(
        "foreground = yes\npid =\ndebug = 3\n[svc]\nclient = {}\naccept = {accept}\nconnect = {connect}\n\
         cert = {}/cert.pem\nkey = {}/key.pem\nCAfile = {}/bundle.pem\nverifyChain = yes\n\
         sslVersion = TLSv1.3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
        if client { "yes" } else { "no" },
        c.display(),
        c.display(),
        c.display(),
    );
    std::fs::write(dir.join(format!("{name}.conf")), text).unwrap();
}

/// Configs `<tag>-east.toml` (exports `iperf` on `target`) and
/// `<tag>-west.toml` (imports it on 127.0.0.1:`import`); admin ports are
/// the QUIC port's thousands plus 1 (west) and plus 2 (east).
fn write_gateways(
    dir: &Path,
    tag: &str,
    east: &str,
    west: &str,
    target: u16,
    import: u16,
    extra: &str,
) {
    let base = if tag == "path" { 15000 } else { 16000 };
    let east_text = format!(
        "[gateway]\nregion = \"us-east\"\nlisten = \"{east}\"\nadmin = \"127.0.0.1:{}\"\n\
         [identity]\ncert = \"e/cert.pem\"\nkey = \"e/key.pem\"\nbundle = \"e/bundle.pem\"\n\
         [tunnel]\n{extra}\n[[export]]\nservice = \"iperf\"\ntarget = \"127.0.0.1:{target}\"\n",
        base + 2
    );
    let west_text = format!(
        "[gateway]\nregion = \"eu-west\"\nlisten = \"{west}\"\nadmin = \"127.0.0.1:{}\"\n\
         [identity]\ncert = \"w/cert.pem\"\nkey = \"w/key.pem\"\nbundle = \"w/bundle.pem\"\n\
         [tunnel]\n{extra}\n[[peer]]\nregion = \"us-east\"\naddresses = [\"{east}\"]\n\
         [[import]]\nservice = \"iperf\"\nlisten = \"127.0.0.1:{import}\"\n",
        base + 1
    );
    std::fs::write(dir.join(format!("{tag}-east.toml")), east_text).unwrap();
    std::fs::write(dir.join(format!("{tag}-west.toml")), west_text).unwrap();
}
