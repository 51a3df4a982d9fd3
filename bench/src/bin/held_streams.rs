//! Streams held through one strait gateway pair at a node's scale: the real
//! `strait` binary, N client connections opened at once through one
//! gateway pair to echo targets, held, then closed. For each N it prints
//! the time until every stream reached its target, each gateway's resident
//! memory before, while held (and per stream), and after every stream
//! closed.
//!
//! ```text
//! cargo build --release -p strait -p strait-bench
//! target/release/held-streams --streams 10000,50000,100000 [--touch 65536]
//! ```
//!
//! `--touch B` echoes B bytes end to end on every stream before holding it
//! idle. Streams are spread over one service per 8,000 (each target and
//! each import port then needs fewer source ports than loopback has).
//! The gateways run with their default configuration, except
//! `max_concurrent` and `max_per_client` (each import's stream limits; every
//! client here is 127.0.0.1) and `[tunnel] max_streams` (streams per QUIC
//! connection), which are raised to fit N; `--tunnel
//! "KEY = VALUE"` adds a line to `[tunnel]`. Needs an open-file limit above
//! N + 500 in every process (client, targets, each gateway): as root it
//! raises its own; the targets run in a child process; everything listens on 127.0.0.1 and stops by itself.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strait_bench::{Proc, free_tcp, free_udp, make_certs, rss_kib, spawn_logged, strait_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Streams per service. Every connection through the pair takes an
/// ephemeral port twice (client to import, exporter to target) from the
/// same 28,000 of this one machine; a port can serve several destinations,
/// so more destinations leave more room.
const PER_SERVICE: usize = 8_000;

fn main() {
    let value = strait_bench::arg_value;
    if let Some(k) = value("--targets") {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve_targets(k.parse().expect("--targets K")));
        return;
    }
    let counts: Vec<usize> = value("--streams")
        .unwrap_or_else(|| "10000".into())
        .split(',')
        .map(|s| {
            s.trim().parse().unwrap_or_else(|_| {
                eprintln!("--streams takes numbers separated by commas, e.g. 10000,50000");
                std::process::exit(2)
            })
        })
        .collect();
    let touch: usize = value("--touch").map_or(0, |v| v.parse().expect("--touch B: bytes"));
    let extra = value("--tunnel").unwrap_or_default();
    let most = counts.iter().copied().max().unwrap_or(0);
    let wanted = (most + 500) as u64;
    // Raising the hard limit needs CAP_SYS_RESOURCE; lowering it would
    // also bind the gateways, which inherit it.
    if rlimit::getrlimit(rlimit::Resource::NOFILE).is_ok_and(|(_, hard)| hard < wanted) {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted);
    }
    let got = rlimit::increase_nofile_limit(wanted).unwrap_or(0);
    if got < wanted {
        eprintln!(
            "the open-file limit is {got}; each process (client, gateways, targets) needs {wanted} for {most} streams: raise the hard limit (ulimit -Hn; needs CAP_SYS_RESOURCE)"
        );
        std::process::exit(2);
    }
    let strait = strait_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Streams held through one strait pair (import -> QUIC -> export -> echo target), {} cores, touch {touch} B",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "| streams | open all s | gateway | before MiB | held MiB | per stream KiB | after close MiB |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|");
    for n in counts {
        rt.block_on(one_run(&strait, n, touch, &extra));
    }
}

/// Echo targets in a child process (this binary re-run with `--targets
/// K`), so that this process holds only the client ends: the open-file
/// limit is per process. The child prints its target addresses, then
/// answers "ACCEPTED CLOSED" on a control port to every connection.
struct Targets {
    addrs: Vec<SocketAddr>,
    control: SocketAddr,
    _child: Proc,
}

impl Targets {
    fn start(k: usize, dir: &Path) -> Targets {
        let out = dir.join("targets.out");
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--targets", &k.to_string()]);
        let child = spawn_logged(c, "echo targets", &out);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let addrs: Vec<SocketAddr> = text.lines().filter_map(|l| l.parse().ok()).collect();
            if addrs.len() == k + 1 {
                return Targets {
                    control: addrs[k],
                    addrs: addrs[..k].to_vec(),
                    _child: child,
                };
            }
            assert!(Instant::now() < deadline, "the echo targets did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (accepted, closed) connections so far.
    async fn counts(&self) -> (usize, usize) {
        let mut s = TcpStream::connect(self.control).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    async fn wait(&self, want: usize, closed: bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let (a, c) = self.counts().await;
            if (if closed { c } else { a }) >= want {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The child's side: K echo listeners and the control port.
async fn serve_targets(k: usize) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut out = String::new();
    for _ in 0..k {
        // A backlog for thousands of connects at once, as the gateway's.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = socket.listen(8_192).unwrap();
        out += &format!("{}\n", l.local_addr().unwrap());
        let (accepted, closed) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    closed.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    out += &format!("{}\n", control.local_addr().unwrap());
    print!("{out}");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    while let Ok((mut s, _)) = control.accept().await {
        let line = format!(
            "{} {}",
            accepted.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed)
        );
        let _ = s.write_all(line.as_bytes()).await;
    }
}

/// Writes both gateways' configurations and starts them; returns
/// (export, import) processes and the import listeners.
fn gateways(
    strait: &Path,
    dir: &Path,
    targets: &[SocketAddr],
    n: usize,
    extra: &str,
) -> (Proc, Proc, Vec<SocketAddr>, SocketAddr) {
    let (wq, eq) = (free_udp(), free_udp());
    let (wa, ea) = (free_tcp(), free_tcp());
    // Streams per QUIC connection: enough for all n on one lane (streams
    // spread over the lanes by load, not evenly), never below the default.
    let max_streams = n.max(4096) + 64;
    let identity = |who: &str| {
        format!(
            "[identity]\ncert = \"{who}/cert.pem\"\nkey = \"{who}/key.pem\"\nbundle = \"{who}/bundle.pem\"\n"
        )
    };
    let tunnel = format!("[tunnel]\nmax_streams = {max_streams}\n{extra}\n");
    let mut west = format!(
        "[gateway]\nregion = \"eu-west\"\nlisten = \"{wq}\"\nadmin = \"{wa}\"\n{}{tunnel}",
        identity("w")
    );
    let mut east = format!(
        "[gateway]\nregion = \"us-east\"\nlisten = \"{eq}\"\nadmin = \"{ea}\"\n{}{tunnel}\
         [[peer]]\nregion = \"eu-west\"\naddresses = [\"{wq}\"]\n",
        identity("e")
    );
    let mut imports = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let listen = free_tcp();
        imports.push(listen);
        west += &format!("\n[[export]]\nservice = \"echo{i}\"\ntarget = \"{t}\"\n");
        east += &format!(
            "\n[[import]]\nservice = \"echo{i}\"\nlisten = \"{listen}\"\nmax_concurrent = {0}\nmax_per_client = {0}\n",
            n + 1_000
        );
    }
    let mut procs = Vec::new();
    for (name, text) in [("west", west), ("east", east)] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let mut c = Command::new(strait);
        c.args(["gateway", "run", "--config"]).arg(&config);
        procs.push(spawn_logged(
            c,
            "strait gateway",
            &dir.join(format!("{name}.log")),
        ));
    }
    let import = procs.pop().unwrap();
    let export = procs.pop().unwrap();
    (export, import, imports, ea)
}

/// Connects `n` clients at once, spread over `addrs`; returns the
/// connections and how many connects failed.
async fn open_all(addrs: &[SocketAddr], n: usize) -> (Vec<TcpStream>, usize) {
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let addr = addrs[i % addrs.len()];
        opening.spawn(async move { TcpStream::connect(addr).await });
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok(s)) => held.push(s),
            _ => failed += 1,
        }
    }
    (held, failed)
}

async fn one_run(strait: &Path, n: usize, touch: usize, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("DEBUG").is_some() {
        eprintln!("logs in {}", dir.path().display());
    }
    make_certs(strait, dir.path());
    let k = n.div_ceil(PER_SERVICE).max(1);
    // Targets for strait, and as many again for the direct burst: closing
    // those leaves their ports in TIME_WAIT towards the targets they used.
    let t = Targets::start(2 * k, dir.path());
    let (strait_targets, direct_targets) = t.addrs.split_at(k);
    let (export, import, listens, admin) = gateways(strait, dir.path(), strait_targets, n, extra);
    let services: Vec<String> = (0..k).map(|i| format!("echo{i}")).collect();
    strait_bench::wait_for_services(admin, &services).await;
    // Let the target checks, probes and lanes settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = [("export", export.0.id()), ("import", import.0.id())];
    let before: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();

    // The same burst straight to the targets first, for comparison.
    let direct = {
        let started = Instant::now();
        let (conns, _) = open_all(direct_targets, n).await;
        let ok = t.wait(n, false, Duration::from_secs(60)).await;
        let took = started.elapsed();
        drop(conns);
        t.wait(n, true, Duration::from_secs(60)).await;
        ok.then_some(took)
    };
    let base = t.counts().await.0;

    let started = Instant::now();
    let (mut held, mut failed) = open_all(&listens, n).await;
    let all_reached = t.wait(base + n, false, Duration::from_secs(60)).await;
    let took = started.elapsed();
    if touch > 0 {
        let mut echoing = tokio::task::JoinSet::new();
        for mut s in held.drain(..) {
            echoing.spawn(async move {
                let data = vec![7u8; touch];
                let mut back = vec![0u8; touch];
                s.write_all(&data).await?;
                s.read_exact(&mut back).await?;
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(r) = echoing.join_next().await {
            match r {
                Ok(Ok(s)) => held.push(s),
                _ => failed += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();
    drop(held);
    let reached = t.counts().await.0;
    t.wait(reached, true, Duration::from_secs(60)).await;
    let reached = reached - base;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();
    if std::env::var_os("DEBUG").is_some() {
        let _ = dir.keep();
    }
    let open = if all_reached {
        format!("{:.2}", took.as_secs_f64())
    } else {
        format!("{reached} of {n} in {:.0}", took.as_secs_f64())
    };
    for (i, (role, _)) in pids.iter().enumerate() {
        println!(
            "| {n} | {open} | {role} | {:.1} | {:.1} | {:.2} | {:.1} |",
            before[i] as f64 / 1024.0,
            during[i] as f64 / 1024.0,
            during[i].saturating_sub(before[i]) as f64 / n as f64,
            after[i] as f64 / 1024.0,
        );
    }
    match direct {
        Some(d) => println!(
            "| {n} | {:.2} | direct to the targets | | | | |",
            d.as_secs_f64()
        ),
        None => println!("| {n} | not all in 60 s | direct to the targets | | | | |"),
    }
    if failed > 0 {
        println!("|  | {failed} client connections failed | | | | | |");
    }
}
