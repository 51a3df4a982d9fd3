//! A fault soak: real gateways (eu-west x 2 importing, us-east x 2 and
//! ap-south x 2 exporting) joined only through netsim, a client mix, and a
//! fault schedule drawn from a seed. Clients: short non-idempotent
//! requests, each with an id the targets record (a request delivered twice
//! is a failure of strait's promise), the same requests from a workload
//! presenting an X.509-SVID to an mTLS import, bulk transfers checked by
//! SHA-256 at both ends, and idle long-lived streams touched every few
//! seconds. Faults: bursts of 30% loss, 2% loss, a black hole 5 s on / 2 s
//! off, 750 ms RTT, reordering and duplication, pairwise and one-way
//! partitions, an exporting gateway killed with SIGKILL and restarted, one
//! frozen with SIGSTOP and thawed, and configuration reloads. Underneath,
//! every certificate lives 45 s and is renewed through a CA service every
//! 30 s, and runs of 150 s and more rotate the CA under the load (a fifth
//! of the way in).
//!
//! ```text
//! cargo build --release -p strait -p strait-bench
//! target/release/soak --duration 30m [--seed 7] [--no-faults]
//! target/release/soak --duration 30m --seed 7 --print-scenario > drill.toml
//! target/release/soak --duration 30m --scenario drill.toml
//! ```
//!
//! The schedule is a scenario file, the format `strait drill run` plays
//! against live gateways (docs/drills.md): `--print-scenario` writes the
//! one a seed draws and stops, `--scenario FILE` plays a file instead.
//! It prints the schedule as it runs, then bytes checked, streams by kind
//! and outcome, every failure attributed to the fault that was active on
//! its path (or "unattributed": only a killed or frozen gateway, or a cut
//! longer than the QUIC idle timeout, may cost a stream), requests delivered twice, renewals and
//! the rotation, and each gateway's open files and memory at the start and
//! the end. It exits 1 on a request delivered twice, a transfer whose bytes
//! changed, a failure no fault explains or a rotation that did not
//! complete. `--no-faults` runs the same load with no fault and prints
//! p50/p99 of the requests minute by minute instead. The same seed draws
//! the same schedule. `SOAK_DEBUG=1` prints why each request failed and
//! keeps the gateways' logs; `SOAK_GATEWAY_LOG` is their `RUST_LOG`
//! (default `info`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use strait_bench::{free_tcp, free_udp, strait_binary};
use strait_ca::tls::{SvidVerifier, client_config};
use strait_ca::{Identity, PeerRequirement, TrustBundle, TrustDomain};
use strait_gateway::scenario::{Fault, LinkFault, Scenario, Step};
use strait_netsim::{LinkChange, LinkConfig, Network, UdpRelay};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

const EXPORTERS: [(&str, &str); 4] = [
    ("gw-u1", "us-east"),
    ("gw-u2", "us-east"),
    ("gw-a1", "ap-south"),
    ("gw-a2", "ap-south"),
];
const IMPORTERS: [&str; 2] = ["gw-e1", "gw-e2"];

/// A tiny deterministic generator (xorshift64*), so a seed is a schedule.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Draws the schedule of a run from its seed: a fault every 3-6 s after
/// the mesh settled (4 s) from the one before, until `duration` is nearly
/// up.
fn drawn(seed: u64, duration: Duration) -> Scenario {
    let mut d = Draw(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut steps = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        at += Duration::from_secs(3 + d.below(4));
        let fault = draw(&mut d);
        if at + fault.duration() + Duration::from_secs(6) > duration {
            break;
        }
        let next = at + fault.duration() + Duration::from_secs(4);
        steps.push(Step { line: 0, at, fault });
        at = next;
    }
    Scenario {
        name: Some(format!("soak seed {seed}, {}", humantime(duration))),
        settle: strait_gateway::scenario::DEFAULT_SETTLE,
        steps,
    }
}

fn humantime(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn draw(d: &mut Draw) -> Fault {
    let region = ["us-east", "ap-south"][d.below(2) as usize].to_owned();
    let link = |region: String, change: LinkFault| Fault::Link {
        from: "eu-west".into(),
        to: region,
        one_way: false,
        duration: Duration::from_secs(6),
        change,
    };
    match d.below(9) {
        0 => link(
            region,
            LinkFault {
                burst: Some((0.3, 8.0)),
                ..Default::default()
            },
        ),
        1 => link(
            region,
            LinkFault {
                loss: Some(0.02),
                ..Default::default()
            },
        ),
        2 => link(
            region,
            LinkFault {
                rtt: Some(Duration::from_millis(750)),
                ..Default::default()
            },
        ),
        3 => link(
            region,
            LinkFault {
                reorder: Some(0.05),
                duplicate: Some(0.02),
                ..Default::default()
            },
        ),
        4 => Fault::Flap {
            from: "eu-west".into(),
            to: region,
            on: Duration::from_secs(5),
            off: Duration::from_secs(2),
            cycles: 2,
        },
        5 => Fault::Partition {
            from: "eu-west".into(),
            to: region,
            one_way: d.below(2) == 0,
            duration: Duration::from_secs(6),
        },
        6 => Fault::Kill {
            gateway: EXPORTERS[d.below(4) as usize].0.into(),
            down: Duration::from_secs(3),
        },
        7 => Fault::Freeze {
            gateway: EXPORTERS[d.below(4) as usize].0.into(),
            duration: Duration::from_secs(3),
        },
        _ => Fault::Reload {
            gateway: IMPORTERS[d.below(2) as usize].into(),
        },
    }
}

/// Whether a failed stream may be `fault`'s doing: streams on a killed or
/// frozen gateway, and streams caught in a cut that lasts at least the QUIC
/// idle timeout. Shorter partitions and black holes, loss, delay,
/// reordering or a reload must cost no stream: QUIC probes a silent path at
/// least every 2 s (the vendored quinn-proto's cap), so the tunnels resume
/// when the cut heals. `target`: the exporter the stream was on, if known.
///
/// Runs once lost a connection or two to a 6 s cut now and then: the first
/// packet after the heal could carry an ACK the peer had repeated since
/// before the cut, its 6 s delay was taken for a round trip, and the
/// probe timeout grew past the idle timeout. The vendored quinn-proto takes
/// no RTT sample from such an ACK any more.
fn explains(fault: &Fault, target: Option<usize>) -> bool {
    // The soak's gateways keep the default: a cut at least this long closes
    // the tunnels in it, and may cost the streams on them.
    let idle_timeout = strait_gateway::config::TunnelSettings::default().idle_timeout;
    match fault {
        Fault::Kill { gateway, .. } | Fault::Freeze { gateway, .. } => {
            target.is_none_or(|t| EXPORTERS[t].0 == gateway)
        }
        Fault::Partition { duration, .. } => *duration >= idle_timeout,
        Fault::Flap { on, .. } => *on >= idle_timeout,
        Fault::Link { .. } | Fault::Reload { .. } => false,
    }
}

/// Why the soak cannot play `scenario`: a region, link or gateway its
/// mesh does not have.
fn check(scenario: &Scenario, path: &Path) -> Result<(), String> {
    let regions = ["eu-west", "us-east", "ap-south"];
    let names: Vec<&str> = EXPORTERS.iter().map(|(n, _)| *n).chain(IMPORTERS).collect();
    for step in &scenario.steps {
        let at = format!("{}:{}", path.display(), step.line);
        match &step.fault {
            Fault::Partition { from, to, .. }
            | Fault::Flap { from, to, .. }
            | Fault::Link { from, to, .. } => {
                for r in [from, to] {
                    if !regions.contains(&r.as_str()) {
                        return Err(format!(
                            "{at}: region {r:?} is not in the soak's mesh ({})",
                            regions.join(", ")
                        ));
                    }
                }
            }
            Fault::Kill { gateway, .. }
            | Fault::Freeze { gateway, .. }
            | Fault::Reload { gateway } => {
                if !names.contains(&gateway.as_str()) {
                    return Err(format!(
                        "{at}: gateway {gateway:?} is not in the soak's mesh ({})",
                        names.join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A failure, when its stream began and when it failed.
struct Failure {
    kind: &'static str,
    /// The request's id, for a failed request: where it was delivered (if
    /// it was) tells which exporter it was on.
    request: Option<u64>,
    began: Instant,
    at: Instant,
    /// The exporting gateway the stream was on, if known.
    target: Option<usize>,
}

#[derive(Default)]
struct Tally {
    ok: HashMap<&'static str, u64>,
    failures: Vec<Failure>,
    bytes_checked: u64,
    corrupted: u64,
    /// Request latencies (ms) by minute of the run.
    latency: HashMap<u64, Vec<f64>>,
}

type Shared<T> = Arc<Mutex<T>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = strait_bench::arg_value;
    let duration = value("--duration")
        .map(|v| parse_duration(&v))
        .unwrap_or(Duration::from_secs(60));
    let seed: u64 = value("--seed").map_or(7, |v| v.parse().expect("--seed N"));
    let faults = !args.iter().any(|a| a == "--no-faults");
    let scenario = match value("--scenario") {
        Some(path) => {
            let path = PathBuf::from(path);
            let scenario = Scenario::load(&path).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            });
            if let Err(e) = check(&scenario, &path) {
                eprintln!("{e}");
                std::process::exit(2)
            }
            scenario
        }
        None => drawn(seed, duration),
    };
    if args.iter().any(|a| a == "--print-scenario") {
        print!("{}", scenario.to_toml());
        return;
    }
    let scenario = faults.then_some(scenario);
    let strait = std::fs::canonicalize(strait_binary()).expect("the strait binary");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(soak(&strait, dir.path(), duration, seed, scenario));
    if std::env::var("SOAK_DEBUG").is_ok() {
        eprintln!("logs and certificates kept in {}", dir.keep().display());
    }
    drop(rt);
    std::process::exit(code);
}

fn parse_duration(v: &str) -> Duration {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| {
        eprintln!("--duration takes 60s, 10m, 1h");
        std::process::exit(2)
    });
    match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            eprintln!("--duration takes 60s, 10m, 1h");
            std::process::exit(2)
        }
    }
}

struct Gateway {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Gateway {
    fn new(name: &'static str, config: PathBuf, dir: &Path) -> Gateway {
        Gateway {
            name,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn start(&mut self, strait: &Path) {
        let mut c = Command::new(strait);
        c.args(["gateway", "run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("SOAK_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        self.child = Some(c.spawn().expect("strait gateway"));
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }
    /// The last line of its log, when the gateway has exited (it could
    /// not start: a port another program took meanwhile, say).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        child.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Some(log.lines().last().unwrap_or("(no log)").to_owned())
    }
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn soak(
    strait: &Path,
    dir: &Path,
    duration: Duration,
    seed: u64,
    scenario: Option<Scenario>,
) -> i32 {
    let faults = scenario.is_some();
    strait_bench::init_ca(strait, &dir.join("ca"));
    for (name, region) in EXPORTERS
        .iter()
        .copied()
        .chain(IMPORTERS.map(|n| (n, "eu-west")))
    {
        issue(
            strait,
            dir,
            "ca",
            &["--gateway", "--region", region, "--name", name],
            name,
            CERT_TTL,
        );
    }
    // The workload's certificate is not renewed by anyone: a day.
    issue(
        strait,
        dir,
        "ca",
        &["--spiffe-id", WORKLOAD],
        "workload",
        "24h",
    );
    std::fs::copy(dir.join("ca/ca.pem"), dir.join("client-bundle.pem")).unwrap();
    let ca_addr = free_udp();
    let ca_service = CaService::start(strait, dir, "ca", ca_addr);
    let regions = ["eu-west", "us-east", "ap-south"].map(String::from);
    // One-way latency (ms) of each link as the run begins.
    let base = |from: &str, to: &str| {
        let far = if from == "eu-west" { to } else { from };
        if far == "us-east" { 20 } else { 40 }
    };
    let net = Arc::new(Network::new(&regions, seed, |from, to| LinkConfig {
        latency: Duration::from_millis(base(from, to)),
        ..Default::default()
    }));
    // Request id -> (deliveries, the exporter that took the last one).
    let delivered: Shared<HashMap<u64, (u32, usize)>> = Arc::default();
    let mut gateways = Vec::new();
    let mut admins = Vec::new();
    let mut quic = Vec::new();
    for (i, (name, region)) in EXPORTERS.iter().enumerate() {
        let target = target(i, delivered.clone()).await;
        let (q, a) = (free_udp(), free_tcp());
        quic.push(q);
        admins.push(a);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[gateway]\nname = \"{name}\"\nregion = \"{region}\"\nlisten = \"{q}\"\nadmin = \"{a}\"\n\n{}\
                 [tunnel]\ndiscover = false\n\n[[export]]\nservice = \"kv\"\ntarget = \"{target}\"\n\n\
                 [[export]]\nservice = \"bulk\"\ntarget = \"{target}\"\n\n[[export]]\nservice = \"idle\"\ntarget = \"{target}\"\n\n\
                 [[export]]\nservice = \"secure\"\ntarget = \"{target}\"\nallow_workloads = [\"{WORKLOAD}\"]\n",
                identity(dir, name, ca_addr)
            ),
        )
        .unwrap();
        gateways.push(Gateway::new(name, config, dir));
    }
    let mut relays = Vec::new();
    let mut imports = Vec::new();
    let mut secure_imports = Vec::new();
    for name in IMPORTERS {
        let mut peers = String::new();
        for region in ["us-east", "ap-south"] {
            let mut addrs = Vec::new();
            for (i, (_, r)) in EXPORTERS.iter().enumerate() {
                if *r != region {
                    continue;
                }
                let relay = UdpRelay::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    quic[i],
                    net.link("eu-west", region).unwrap(),
                    net.link(region, "eu-west").unwrap(),
                )
                .await
                .unwrap();
                addrs.push(format!("\"{}\"", relay.local_addr()));
                relays.push(relay);
            }
            peers += &format!(
                "\n[[peer]]\nregion = \"{region}\"\naddresses = [{}]\n",
                addrs.join(", ")
            );
        }
        let (kv, bulk, idle, a) = (free_tcp(), free_tcp(), free_tcp(), free_tcp());
        let secure = free_tcp();
        imports.push((kv, bulk, idle));
        secure_imports.push(secure);
        admins.push(a);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[gateway]\nname = \"{name}\"\nregion = \"eu-west\"\nlisten = \"{}\"\nadmin = \"{a}\"\n\n{}\
                 [tunnel]\ndiscover = false\n{peers}\n\
                 [[import]]\nservice = \"kv\"\nlisten = \"{kv}\"\nprefer = [\"us-east\", \"ap-south\"]\n\n\
                 [[import]]\nservice = \"bulk\"\nlisten = \"{bulk}\"\nprefer = [\"us-east\", \"ap-south\"]\n\n\
                 [[import]]\nservice = \"idle\"\nlisten = \"{idle}\"\nprefer = [\"us-east\", \"ap-south\"]\n\n\
                 [[import]]\nservice = \"secure\"\nlisten = \"{secure}\"\nmtls = true\nprefer = [\"us-east\", \"ap-south\"]\n",
                free_udp(),
                identity(dir, name, ca_addr)
            ),
        )
        .unwrap();
        gateways.push(Gateway::new(name, config, dir));
    }
    for g in gateways.iter_mut() {
        g.start(strait);
    }
    for a in &admins[4..] {
        strait_bench::wait_for_services(*a, &["kv", "bulk", "idle", "secure"].map(String::from))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A gateway that could not start would turn the whole run into
    // failures the faults do not explain: say so and stop instead.
    for g in gateways.iter_mut() {
        if let Some(last) = g.exited() {
            eprintln!("the soak could not start: {} exited: {last}", g.name);
            return 2;
        }
    }
    let start_figures: Vec<(usize, u64)> = gateways
        .iter()
        .map(|g| (fds(g.pid()), strait_bench::rss_kib(g.pid())))
        .collect();

    let start = Instant::now();
    let end = start + duration;
    let tally: Shared<Tally> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(1));
    let mut clients = Vec::new();
    for w in 0..4 {
        let (kv, _, _) = imports[w % 2];
        clients.push(tokio::spawn(kv_client(
            kv,
            None,
            ids.clone(),
            tally.clone(),
            stop.clone(),
            start,
        )));
    }
    let workload = Arc::new(Workload {
        dir: dir.join("workload"),
        bundle: dir.join("client-bundle.pem"),
    });
    for secure in &secure_imports {
        clients.push(tokio::spawn(kv_client(
            *secure,
            Some(workload.clone()),
            ids.clone(),
            tally.clone(),
            stop.clone(),
            start,
        )));
    }
    // The CA rotates under the load when the run is long enough for one.
    let rotation = {
        let (strait, dir) = (strait.to_owned(), dir.to_owned());
        let identities: Vec<PathBuf> = gateways.iter().map(|g| dir.join(g.name)).collect();
        let at = rotate_at(duration);
        tokio::spawn(async move {
            match at {
                Some(at) => {
                    tokio::time::sleep_until((start + at).into()).await;
                    rotate_ca(&strait, &dir, ca_service, &identities, start).await
                }
                None => Rotation {
                    service: Some(ca_service),
                    window: None,
                    failed: None,
                },
            }
        })
    };
    for (w, (_, bulk, _)) in imports.iter().enumerate() {
        clients.push(tokio::spawn(bulk_client(
            *bulk,
            seed + w as u64,
            tally.clone(),
            stop.clone(),
        )));
    }
    for w in 0..20 {
        let (_, _, idle) = imports[w % 2];
        clients.push(tokio::spawn(idle_client(idle, tally.clone(), stop.clone())));
    }

    let mut schedule: Vec<(Instant, Instant, Fault)> = Vec::new();
    for step in scenario.map(|s| s.steps).unwrap_or_default() {
        let at = start + step.at;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let fault = step.fault;
        let began = Instant::now();
        println!(
            "{:>6.1}s  {}",
            start.elapsed().as_secs_f64(),
            fault.describe()
        );
        let index = |name: &str| gateways.iter().position(|g| g.name == name).unwrap();
        match &fault {
            Fault::Link {
                from,
                to,
                one_way,
                duration,
                change,
            } => {
                let change = LinkChange {
                    loss: change.loss,
                    burst: change.burst,
                    latency: change.rtt.map(|rtt| rtt / 2),
                    reorder: change.reorder,
                    duplicate: change.duplicate,
                    ..Default::default()
                };
                net.set(from, to, *one_way, &change).unwrap();
                tokio::time::sleep(*duration).await;
                restore(&net, from, to, base);
            }
            Fault::Flap {
                from,
                to,
                on,
                off,
                cycles,
            } => {
                for _ in 0..*cycles {
                    net.partition(from, to, false).unwrap();
                    tokio::time::sleep(*on).await;
                    net.heal(Some((from, to))).unwrap();
                    tokio::time::sleep(*off).await;
                }
            }
            Fault::Partition {
                from,
                to,
                one_way,
                duration,
            } => {
                net.partition(from, to, *one_way).unwrap();
                tokio::time::sleep(*duration).await;
                net.heal(Some((from, to))).unwrap();
            }
            Fault::Kill { gateway, down } => {
                let g = index(gateway);
                gateways[g].signal("-KILL");
                if let Some(mut c) = gateways[g].child.take() {
                    let _ = c.wait();
                }
                tokio::time::sleep(*down).await;
                gateways[g].start(strait);
            }
            Fault::Freeze { gateway, duration } => {
                let g = index(gateway);
                gateways[g].signal("-STOP");
                tokio::time::sleep(*duration).await;
                gateways[g].signal("-CONT");
            }
            Fault::Reload { gateway } => gateways[index(gateway)].signal("-HUP"),
        }
        schedule.push((began, Instant::now(), fault));
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let rotation = rotation.await.expect("the rotation task");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut renewals = Vec::new();
    for a in &admins {
        let metrics = strait_bench::admin_get(*a, "/metrics").await;
        let count = |result: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with("strait_certificate_renewals_total{")
                        && l.contains(&format!("result=\"{result}\""))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        renewals.push((count("ok"), count("error")));
    }
    let end_figures: Vec<(usize, u64)> = gateways
        .iter()
        .map(|g| (fds(g.pid()), strait_bench::rss_kib(g.pid())))
        .collect();

    let tally = tally.lock().unwrap();
    let delivered = delivered.lock().unwrap();
    let twice = delivered.values().filter(|(n, _)| *n > 1).count();
    let mut by_fault: HashMap<String, u64> = HashMap::new();
    let mut unattributed = Vec::new();
    let grace = Duration::from_secs(10);
    for f in &tally.failures {
        let cause = schedule
            .iter()
            // Any fault on the stream's path during its life (and a little
            // after a fault ended: probes, hold-downs, redials).
            .filter(|(b, e, _)| f.at + Duration::from_secs(1) >= *b && f.began <= *e + grace)
            .find(|(_, _, fault)| {
                let target = f
                    .request
                    .and_then(|id| delivered.get(&id).map(|(_, i)| *i))
                    .or(f.target);
                explains(fault, target)
            });
        match cause {
            Some((_, _, fault)) => {
                *by_fault
                    .entry(format!("{} ({})", fault.describe(), f.kind))
                    .or_default() += 1
            }
            None => unattributed.push(f),
        }
    }
    println!(
        "\nsoak of {duration:?}, seed {seed}, {} faults",
        schedule.len()
    );
    println!(
        "bytes checked by SHA-256: {} MiB, transfers whose bytes changed: {}",
        tally.bytes_checked >> 20,
        tally.corrupted
    );
    for kind in ["request", "mtls request", "bulk", "idle touch"] {
        let failed = tally.failures.iter().filter(|f| f.kind == kind).count();
        println!(
            "{kind:<12} ok {:>8}  failed {failed:>5}",
            tally.ok.get(kind).copied().unwrap_or(0)
        );
    }
    let mut causes: Vec<_> = by_fault.into_iter().collect();
    causes.sort();
    for (cause, n) in causes {
        println!("  failed during {cause}: {n}");
    }
    println!(
        "  failed with no fault to explain it: {}",
        unattributed.len()
    );
    for f in unattributed.iter().take(10) {
        println!(
            "    {} at {:.1}s",
            f.kind,
            f.at.duration_since(start).as_secs_f64()
        );
    }
    println!("requests delivered twice: {twice}");
    let (renewed, renewal_errors) = renewals
        .iter()
        .fold((0, 0), |(a, b), (ok, err)| (a + ok, b + err));
    println!(
        "certificate renewals ({CERT_TTL} certificates, renewed every 30 s): {renewed} ok, {renewal_errors} failed and retried"
    );
    match (&rotation.window, &rotation.failed) {
        (None, _) => println!("CA rotation: none (runs of 150 s and more rotate the CA)"),
        (Some((b, e)), None) => println!(
            "CA rotation: completed under load, {:.1}s to {:.1}s",
            b.duration_since(start).as_secs_f64(),
            e.duration_since(start).as_secs_f64()
        ),
        (Some(_), Some(why)) => println!("CA rotation: FAILED: {why}"),
    }
    drop(rotation.service);
    println!(
        "\n{:<7} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "gateway", "fds start", "fds end", "RSS start", "RSS end", "renewals"
    );
    for ((g, (s, e)), (renewed, _)) in gateways
        .iter()
        .zip(start_figures.iter().zip(&end_figures))
        .zip(&renewals)
    {
        println!(
            "{:<7} {:>9} {:>9} {:>8} MiB {:>8} MiB {:>9}",
            g.name,
            s.0,
            e.0,
            s.1 >> 10,
            e.1 >> 10,
            renewed
        );
    }
    if !faults {
        println!("\nminute  requests  p50 ms  p99 ms");
        let mut minutes: Vec<_> = tally.latency.keys().copied().collect();
        minutes.sort();
        for m in minutes {
            let mut v = tally.latency[&m].clone();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
            println!("{m:>6} {:>9} {:>7.1} {:>7.1}", v.len(), at(0.5), at(0.99));
        }
    }
    let mut exited = false;
    for g in gateways.iter_mut() {
        if let Some(last) = g.exited() {
            println!("{} exited during the run: {last}", g.name);
            exited = true;
        }
    }
    drop(relays);
    i32::from(
        twice > 0
            || tally.corrupted > 0
            || !unattributed.is_empty()
            || rotation.failed.is_some()
            || exited,
    )
}

/// The `[identity]` of gateway `name`: its files, renewed through the CA
/// service at `ca` (certificates of 45 s: a renewal every 30 s).
fn identity(dir: &Path, name: &str, ca: SocketAddr) -> String {
    let id = dir.join(name);
    format!(
        "[identity]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\nbundle = \"{0}/bundle.pem\"\n\
         ca_service = \"{ca}\"\nrefresh = \"5s\"\n\n",
        id.display()
    )
}

/// The SPIFFE ID of the mTLS clients.
const WORKLOAD: &str = "spiffe://example.org/ns/soak/sa/client";
/// Lifetime of every certificate the soak's CA issues: renewed at 2/3, so
/// every 30 s.
const CERT_TTL: &str = "45s";

/// `strait cert issue` by the CA in `dir/ca` into `dir/out`, for `ttl`.
fn issue(strait: &Path, dir: &Path, ca: &str, what: &[&str], out: &str, ttl: &str) {
    let (ca, out) = (dir.join(ca), dir.join(out));
    let mut args = vec!["cert", "issue", "--ca", ca.to_str().unwrap()];
    args.extend_from_slice(what);
    args.extend_from_slice(&["--ttl", ttl, "--force", "--out", out.to_str().unwrap()]);
    strait_bench::run_strait(strait, &args);
}

/// `strait ca serve` of `dir/ca` on `addr`, issuing 45 s certificates.
struct CaService(Child, SocketAddr);

impl CaService {
    fn start(strait: &Path, dir: &Path, ca: &str, addr: SocketAddr) -> CaService {
        let log = dir.join(format!("{ca}-serve.log"));
        let child = Command::new(strait)
            .args(["ca", "serve", "--ca"])
            .arg(dir.join(ca))
            .args(["--validity", CERT_TTL, "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("strait ca serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("CA service ready")
        {
            assert!(Instant::now() < deadline, "the CA service did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        CaService(child, addr)
    }
}

impl Drop for CaService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When the CA rotates: a fifth into runs of 150 s and more (a rotation
/// takes about 70 s: bundles, one certificate lifetime, bundles again).
fn rotate_at(duration: Duration) -> Option<Duration> {
    (duration >= Duration::from_secs(150)).then(|| duration / 5)
}

fn certificates_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches("BEGIN CERTIFICATE")
        .count()
}

/// Waits up to `patience` for `done`; false if it never held.
async fn until(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// A CA rotation as README.md describes it, through the CA service: a new
/// CA; both roots in the bundle the service hands out (and the workload's);
/// the service moves to the new CA, so renewals (every 30 s) move every
/// gateway to it, and the workload gets a certificate of it; then the old
/// root leaves the bundle.
async fn rotate_ca(
    strait: &Path,
    dir: &Path,
    old: CaService,
    identities: &[PathBuf],
    start: Instant,
) -> Rotation {
    let began = Instant::now();
    let ca_addr = old.1;
    let say = |what: &str| {
        println!(
            "{:>6.1}s  CA rotation: {what}",
            start.elapsed().as_secs_f64()
        )
    };
    let run = async {
        let td = ["--trust-domain", "example.org", "--dir"];
        let ca2 = dir.join("ca2");
        let mut args = vec!["ca", "init"];
        args.extend_from_slice(&td);
        args.push(ca2.to_str().unwrap());
        strait_bench::run_strait(strait, &args);
        let both = std::fs::read_to_string(dir.join("ca/ca.pem")).unwrap()
            + &std::fs::read_to_string(ca2.join("ca.pem")).unwrap();
        for bundle in [
            dir.join("ca/bundle.pem"),
            ca2.join("bundle.pem"),
            dir.join("client-bundle.pem"),
        ] {
            std::fs::write(bundle, &both).unwrap();
        }
        say("a new CA; both roots in every bundle");
        if !until(Duration::from_secs(30), || {
            identities
                .iter()
                .all(|i| certificates_in(&i.join("bundle.pem")) == 2)
        })
        .await
        {
            return Err("a gateway never fetched the bundle with both roots".to_owned());
        }
        drop(old);
        let service = CaService::start(strait, dir, "ca2", ca_addr);
        issue(
            strait,
            dir,
            "ca2",
            &["--spiffe-id", WORKLOAD],
            "workload",
            "24h",
        );
        say("the CA service issues from the new CA; the workload has its certificate");
        let root2 = std::fs::read_to_string(ca2.join("ca.pem")).unwrap();
        std::fs::write(dir.join("root2.pem"), &root2).unwrap();
        if !until(Duration::from_secs(90), || {
            identities.iter().all(|i| {
                Command::new(strait)
                    .args(["cert", "verify", "--bundle"])
                    .arg(dir.join("root2.pem"))
                    .arg(i.join("cert.pem"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
        })
        .await
        {
            return Err("a gateway never renewed into the new CA".to_owned());
        }
        say("every gateway holds a certificate of the new CA");
        for bundle in [ca2.join("bundle.pem"), dir.join("client-bundle.pem")] {
            std::fs::write(bundle, &root2).unwrap();
        }
        if !until(Duration::from_secs(30), || {
            identities
                .iter()
                .all(|i| certificates_in(&i.join("bundle.pem")) == 1)
        })
        .await
        {
            return Err("a gateway never dropped the old root".to_owned());
        }
        say("the old root is gone from every bundle");
        Ok(service)
    };
    let (service, failed) = match run.await {
        Ok(service) => (Some(service), None),
        Err(e) => (None, Some(e)),
    };
    Rotation {
        service,
        window: Some((began, Instant::now())),
        failed,
    }
}

/// How a CA rotation went; `service` is the CA service that serves on
/// (kept until the run ends).
struct Rotation {
    service: Option<CaService>,
    window: Option<(Instant, Instant)>,
    failed: Option<String>,
}

/// The link between `from` and `to` as the run began, both ways.
fn restore(net: &Network, from: &str, to: &str, base: impl Fn(&str, &str) -> u64) {
    let change = LinkChange {
        latency: Some(Duration::from_millis(base(from, to))),
        loss: Some(0.0),
        burst: Some((0.0, 1.0)),
        duplicate: Some(0.0),
        reorder: Some(0.0),
        ..Default::default()
    };
    net.set(from, to, false, &change).unwrap();
}

/// The target behind exporting gateway `index`: `K<id>\n` records a
/// delivery of request `id` and answers `OK <index>\n`; `B` then bytes
/// until EOF answers their SHA-256; `I` echoes each byte (idle streams).
async fn target(index: usize, delivered: Shared<HashMap<u64, (u32, usize)>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let delivered = delivered.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).await.is_err() {
                    return;
                }
                match kind[0] {
                    b'K' => {
                        let mut line = String::new();
                        if s.read_line(&mut line).await.is_ok()
                            && let Ok(id) = line.trim().parse::<u64>()
                        {
                            {
                                let mut d = delivered.lock().unwrap();
                                let e = d.entry(id).or_insert((0, index));
                                *e = (e.0 + 1, index);
                            }
                            let _ = s
                                .get_mut()
                                .write_all(format!("OK {index}\n").as_bytes())
                                .await;
                        }
                    }
                    b'B' => {
                        let mut h = Sha256::new();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) => break,
                                Ok(n) => h.update(&buf[..n]),
                                Err(_) => return,
                            }
                        }
                        let _ = s.get_mut().write_all(&h.finalize()).await;
                    }
                    _ => {
                        let _ = s.get_mut().write_all(format!("{index}\n").as_bytes()).await;
                        let mut b = [0u8; 1];
                        while s.read_exact(&mut b).await.is_ok() {
                            if s.get_mut().write_all(&b).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn fail(tally: &Shared<Tally>, kind: &'static str, began: Instant, target: Option<usize>) {
    fail_request(tally, kind, None, began, target);
}

fn fail_request(
    tally: &Shared<Tally>,
    kind: &'static str,
    request: Option<u64>,
    began: Instant,
    target: Option<usize>,
) {
    tally.lock().unwrap().failures.push(Failure {
        kind,
        request,
        began,
        at: Instant::now(),
        target,
    });
}

fn ok(tally: &Shared<Tally>, kind: &'static str) {
    *tally.lock().unwrap().ok.entry(kind).or_default() += 1;
}

/// Short non-idempotent requests, each with an id the targets record; over
/// workload mTLS (an X.509-SVID of `WORKLOAD`) when `tls` is given.
async fn kv_client(
    import: SocketAddr,
    tls: Option<Arc<Workload>>,
    ids: Arc<AtomicU64>,
    tally: Shared<Tally>,
    stop: Arc<AtomicBool>,
    start: Instant,
) {
    let kind = if tls.is_some() {
        "mtls request"
    } else {
        "request"
    };
    while !stop.load(Ordering::Relaxed) {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(15), async {
            let s = TcpStream::connect(import).await?;
            let line = match &tls {
                None => request(s, id).await?,
                Some(w) => {
                    let tls = w
                        .connector()
                        .connect(ServerName::try_from("gateway").unwrap(), s)
                        .await?;
                    request(tls, id).await?
                }
            };
            std::io::Result::Ok(line)
        })
        .await;
        match answer {
            Ok(Ok(line)) if line.starts_with("OK ") => {
                ok(&tally, kind);
                if tls.is_none() {
                    let minute = began.duration_since(start).as_secs() / 60;
                    tally
                        .lock()
                        .unwrap()
                        .latency
                        .entry(minute)
                        .or_default()
                        .push(began.elapsed().as_secs_f64() * 1e3);
                }
            }
            // Where it went is known only if it was delivered.
            other => {
                if std::env::var("SOAK_DEBUG").is_ok() {
                    eprintln!(
                        "{kind} failed at {:.1}s: {other:?}",
                        start.elapsed().as_secs_f64()
                    );
                }
                fail_request(&tally, kind, Some(id), began, None)
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn request(
    s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    id: u64,
) -> std::io::Result<String> {
    let mut s = BufReader::new(s);
    s.get_mut().write_all(format!("K{id}\n").as_bytes()).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    Ok(line)
}

/// The workload the mTLS clients are: its SVID (renewed by the rotation)
/// and the roots it trusts gateways by, read for each connection.
struct Workload {
    dir: PathBuf,
    bundle: PathBuf,
}

impl Workload {
    fn connector(&self) -> TlsConnector {
        let td = TrustDomain::parse("example.org").unwrap();
        let verifier = Arc::new(SvidVerifier::new(
            TrustBundle::load(&self.bundle).unwrap(),
            PeerRequirement::Gateway(td),
        ));
        let id = Identity::load(&self.dir.join("cert.pem"), &self.dir.join("key.pem")).unwrap();
        TlsConnector::from(Arc::new(client_config(&id, verifier, &[]).unwrap()))
    }
}

async fn bulk_client(import: SocketAddr, seed: u64, tally: Shared<Tally>, stop: Arc<AtomicBool>) {
    let mut draw = Draw(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let len = (256 << 10) + draw.below(4 << 20) as usize;
        let data: Vec<u8> = (0..len).map(|_| draw.next() as u8).collect();
        let want = Sha256::digest(&data).to_vec();
        let began = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(60), async {
            let mut s = TcpStream::connect(import).await?;
            s.write_all(b"B").await?;
            s.write_all(&data).await?;
            s.shutdown().await?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await?;
            std::io::Result::Ok(got)
        })
        .await;
        match result {
            Ok(Ok(got)) if got.len() == 32 => {
                let mut t = tally.lock().unwrap();
                if got == want {
                    t.bytes_checked += len as u64;
                    *t.ok.entry("bulk").or_default() += 1;
                } else {
                    t.corrupted += 1;
                }
            }
            _ => fail(&tally, "bulk", began, None),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn idle_client(import: SocketAddr, tally: Shared<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(import)).await
        else {
            fail(&tally, "idle touch", began, None);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut s = BufReader::new(s);
        let mut line = String::new();
        let served_by = async {
            s.get_mut().write_all(b"I").await?;
            s.read_line(&mut line).await?;
            std::io::Result::Ok(())
        };
        let target = match tokio::time::timeout(Duration::from_secs(15), served_by).await {
            Ok(Ok(())) => line.trim().parse::<usize>().ok(),
            _ => {
                fail(&tally, "idle touch", began, None);
                continue;
            }
        };
        // Held and touched every 3 s until it fails or the soak ends.
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let began = Instant::now();
            let touch = async {
                s.get_mut().write_all(b"x").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                std::io::Result::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), touch).await {
                Ok(Ok(())) => ok(&tally, "idle touch"),
                _ => {
                    fail(&tally, "idle touch", began, target);
                    break;
                }
            }
        }
    }
}
