//! `strait demo`: strait's main job on one machine. A CA and certificates in
//! a temporary directory, netsim with three regions, three gateways and two
//! demo services in this process, a client load, a partition of the
//! preferred region and its healing, a table every second, a summary and a
//! report with a plot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use strait_ca::{
    CaOptions, CertificateAuthority, KeyType, Overwrite, SpiffeId, SvidRequest, TrustDomain,
};
use strait_gateway::GatewayConfig;
use strait_gateway::config::{
    ExportConfig, IdentityPaths, ImportConfig, PeerConfig, TunnelSettings,
};
use strait_netsim::topology::{Gateway, Region, Topology};
use strait_netsim::{LinkConfig, Netsim};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::args::{Demo, Scenario};

const CLIENT: &str = "eu-west";
const PREFERRED: &str = "us-east";
const SECOND: &str = "ap-south";
const SERVICE: &str = "checkout";
/// New client connections per second (each: connect, one request, one
/// response).
const CLIENTS: u64 = 4;
const EVERY: Duration = Duration::from_millis(100);

/// One client connection as the demo saw it.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    latency: Duration,
    region: Option<String>,
}

/// When things happened, relative to the start.
#[derive(Debug, Default, Clone)]
struct Timeline {
    cut: Option<Duration>,
    heal: Option<Duration>,
}

pub fn run(args: Demo) -> anyhow::Result<std::process::ExitCode> {
    let report_dir = args.report.clone();
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("cannot create {}", report_dir.display()))?;
    let log = std::fs::File::create(report_dir.join("gateways.log"))
        .with_context(|| format!("cannot write {}", report_dir.join("gateways.log").display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: Demo) -> anyhow::Result<std::process::ExitCode> {
    let duration = args.duration;
    let cut_at = duration / 4;
    let heal_at = duration * 7 / 12;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    println!(
        "strait demo: three regions on one machine, {} s, seed {}",
        duration.as_secs(),
        args.seed
    );
    println!("  certificates and configuration in {}", d.display());

    // Identities.
    let td = TrustDomain::parse("demo.strait")?;
    let (ca, _) = CertificateAuthority::create(&CaOptions::new(td.clone()), SystemTime::now())?;
    let mut ids = BTreeMap::new();
    for (region, name) in [(CLIENT, "gw-eu"), (PREFERRED, "gw-us"), (SECOND, "gw-ap")] {
        let out = d.join(name);
        ca.issue(
            &SvidRequest::new(SpiffeId::gateway(&td, region, name)?),
            KeyType::P256,
            SystemTime::now(),
        )?
        .write_to(&out, Overwrite::Never)?;
        ids.insert(region, (name, out));
    }

    // Demo services: answer each request line with the region that served it.
    let us_service = demo_service(PREFERRED).await?;
    let ap_service = demo_service(SECOND).await?;

    // Exporting gateways first: netsim needs their addresses.
    let exporter = |region: &'static str, target: SocketAddr| {
        let (name, out) = ids[region].clone();
        gateway_config(
            name,
            region,
            &out,
            Vec::new(),
            vec![(SERVICE, target)],
            Vec::new(),
        )
    };
    let us = strait_gateway::start(exporter(PREFERRED, us_service)).await?;
    let ap = strait_gateway::start(exporter(SECOND, ap_service)).await?;

    // netsim: a realistic RTT matrix between the three regions.
    let eu_quic = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let rtt = |a: &str, b: &str| -> u64 {
        match (a.min(b), a.max(b)) {
            ("eu-west", "us-east") => 80,
            ("ap-south", "eu-west") => 150,
            _ => 210,
        }
    };
    let regions = [
        (CLIENT, "gw-eu", eu_quic),
        (PREFERRED, "gw-us", us.quic_addr()),
        (SECOND, "gw-ap", ap.quic_addr()),
    ];
    let mut links = BTreeMap::new();
    for (a, ..) in regions {
        for (b, ..) in regions {
            if a != b {
                links.insert(
                    (a.to_owned(), b.to_owned()),
                    LinkConfig {
                        latency: Duration::from_millis(rtt(a, b) / 2),
                        jitter: Duration::from_millis(2),
                        ..Default::default()
                    },
                );
            }
        }
    }
    let topology = Topology {
        seed: args.seed,
        control: "127.0.0.1:0".parse()?,
        relay_base_port: None,
        regions: regions
            .iter()
            .map(|(region, name, addr)| Region {
                name: region.to_string(),
                gateways: vec![Gateway {
                    name: name.to_string(),
                    region: region.to_string(),
                    addr: *addr,
                }],
            })
            .collect(),
        links,
    };
    let sim = Netsim::start(&topology).await?;
    println!(
        "  netsim: RTT eu-west<->us-east 80 ms, eu-west<->ap-south 150 ms, us-east<->ap-south 210 ms; control API {}",
        sim.control_addr()
    );

    // The importing gateway in eu-west prefers us-east, then ap-south.
    let (name, out) = ids[CLIENT].clone();
    let import_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let peers = vec![
        (
            PREFERRED,
            sim.dial_addr("gw-eu", "gw-us")
                .context("relay to us-east")?,
        ),
        (
            SECOND,
            sim.dial_addr("gw-eu", "gw-ap")
                .context("relay to ap-south")?,
        ),
    ];
    let mut eu_config = gateway_config(
        name,
        CLIENT,
        &out,
        peers,
        Vec::new(),
        vec![(SERVICE, import_addr)],
    );
    eu_config.listen = eu_quic;
    let eu = strait_gateway::start(eu_config).await?;
    wait_for_tunnels(&eu).await?;
    println!(
        "  gateways up; clients in eu-west open {} connections a second to {SERVICE}",
        CLIENTS * 10
    );
    println!();

    // Load and the scenario, side by side.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let start = Instant::now();
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        load.push(tokio::spawn(client_loop(
            import_addr,
            start,
            duration,
            samples.clone(),
        )));
    }
    let network = sim.network().clone();
    let scenario = args.scenario;
    let events = timeline.clone();
    let scenario_task = tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + cut_at)).await;
        match scenario {
            Scenario::Partition => network.partition(CLIENT, PREFERRED, false),
            Scenario::Oneway => network.partition(PREFERRED, CLIENT, true),
        }
        .expect("regions exist");
        events.lock().expect("timeline").cut = Some(start.elapsed());
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + heal_at)).await;
        network.heal(None).expect("heal");
        events.lock().expect("timeline").heal = Some(start.elapsed());
    });

    println!(
        "{:>5}  {:>8} {:>8}  {:>6}  {:>7} {:>7}  event",
        "t", "us-east", "ap-south", "errors", "p50", "p99"
    );
    let mut second = 1u64;
    while start.elapsed() < duration {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs(second),
        ))
        .await;
        let all = samples.lock().expect("samples").clone();
        let window_start = Duration::from_secs(second - 1);
        let fresh: Vec<Sample> = all
            .iter()
            .filter(|s| {
                s.at + s.latency >= window_start
                    && s.at + s.latency < window_start + Duration::from_secs(1)
            })
            .cloned()
            .collect();
        let fresh = &fresh[..];
        let t = timeline.lock().expect("timeline").clone();
        let window = Duration::from_secs(second - 1)..Duration::from_secs(second);
        let event = match (t.cut, t.heal) {
            (Some(c), _) if window.contains(&c) => format!("<- {} cut from eu-west", PREFERRED),
            (_, Some(h)) if window.contains(&h) => format!("<- {} healed", PREFERRED),
            _ => String::new(),
        };
        let count = |r: &str| {
            fresh
                .iter()
                .filter(|s| s.region.as_deref() == Some(r))
                .count()
        };
        let errors = fresh.iter().filter(|s| s.region.is_none()).count();
        let (p50, p99) = percentiles(fresh);
        println!(
            "{:>4}s  {:>8} {:>8}  {:>6}  {:>5.0}ms {:>5.0}ms  {event}",
            second,
            count(PREFERRED),
            count(SECOND),
            errors,
            p50,
            p99
        );
        second += 1;
    }
    for l in load {
        let _ = l.await;
    }
    let _ = scenario_task.await;
    let samples = samples.lock().expect("samples").clone();
    let timeline = timeline.lock().expect("timeline").clone();
    let summary = Summary::of(&samples, &timeline);
    println!();
    summary.print();
    let report = write_report(&args.report, &samples, &timeline, &summary, duration)?;
    println!("  report: {}", report.display());
    println!(
        "  gateway logs: {}",
        args.report.join("gateways.log").display()
    );

    eu.shutdown().await;
    us.shutdown().await;
    ap.shutdown().await;
    drop(sim);
    Ok(if summary.failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn gateway_config(
    name: &str,
    region: &str,
    identity: &Path,
    peers: Vec<(&str, SocketAddr)>,
    exports: Vec<(&str, SocketAddr)>,
    imports: Vec<(&str, SocketAddr)>,
) -> GatewayConfig {
    GatewayConfig {
        name: name.to_owned(),
        region: region.to_owned(),
        listen: "127.0.0.1:0".parse().expect("static address"),
        advertise: None,
        relay: true,
        admin: "127.0.0.1:0".parse().expect("static address"),
        identity: IdentityPaths::in_dir(identity),
        federation: Vec::new(),
        renewal: None,
        peers: peers
            .into_iter()
            .map(|(r, a)| PeerConfig {
                region: Some(r.to_owned()),
                trust_domain: None,
                addresses: vec![a.to_string()],
            })
            .collect(),
        exports: exports
            .into_iter()
            .map(|(s, t)| ExportConfig {
                service: s.to_owned(),
                target: t.to_string(),
                allow: Vec::new(),
                allow_workloads: Vec::new(),
                limits: Default::default(),
                accept_relayed: true,
            })
            .collect(),
        imports: imports
            .into_iter()
            .map(|(s, l)| ImportConfig {
                service: s.to_owned(),
                listen: l,
                prefer: vec![PREFERRED.to_owned(), SECOND.to_owned()],
                limits: Default::default(),
                mtls: false,
                // The demo's clients send a request and read a tag back:
                // delivering one twice is harmless, so a failover may
                // replay the bytes of a stream cut in flight.
                idempotent: true,
                local: None,
            })
            .collect(),
        // The demo's regions are joined only through its netsim relays; a
        // gateway that learned the others' real addresses would go around
        // the partitions it shows.
        tunnel: TunnelSettings {
            discover: false,
            ..TunnelSettings::default()
        },
        health: Default::default(),
        target_check: Duration::from_secs(1),
        hold_down: Duration::from_secs(5),
        drain_grace: Duration::from_secs(5),
    }
}

async fn demo_service(region: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    if w.write_all(format!("served-by {region}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn wait_for_tunnels(eu: &strait_gateway::RunningGateway) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Gateways (not connections: each may have several lanes).
        let offering = eu
            .handle()
            .plan(SERVICE, &[], (0, 0))
            .candidates
            .iter()
            .filter(|c| matches!(c.verdict, strait_core::plane::Verdict::Ranked { .. }))
            .map(|c| c.key.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if offering == 2 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateways did not connect within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client: a new connection every 100 ms, each on its own task (a
/// connection stuck in a failover does not hold back the next), one request
/// and one answer each.
async fn client_loop(
    import: SocketAddr,
    start: Instant,
    duration: Duration,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let mut next = tokio::time::Instant::now();
    let mut inflight = Vec::new();
    while start.elapsed() < duration {
        next += EVERY;
        let samples = samples.clone();
        inflight.push(tokio::spawn(async move {
            let at = start.elapsed();
            let t = Instant::now();
            let region = tokio::time::timeout(Duration::from_secs(5), one_request(import))
                .await
                .ok()
                .flatten();
            samples.lock().expect("samples").push(Sample {
                at,
                latency: t.elapsed(),
                region,
            });
        }));
        tokio::time::sleep_until(next).await;
    }
    for task in inflight {
        let _ = task.await;
    }
}

async fn one_request(import: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect(import).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    w.write_all(b"GET /checkout\n").await.ok()?;
    let line = BufReader::new(r).lines().next_line().await.ok()??;
    line.strip_prefix("served-by ").map(str::to_owned)
}

fn percentiles(samples: &[Sample]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.region.is_some())
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

struct Summary {
    connections: usize,
    failures: usize,
    failover: Option<Duration>,
    failback: Option<Duration>,
    by_region: BTreeMap<String, usize>,
}

impl Summary {
    fn of(samples: &[Sample], t: &Timeline) -> Summary {
        let done = |s: &Sample| s.at + s.latency;
        let failover = t.cut.and_then(|cut| {
            samples
                .iter()
                .filter(|s| s.region.as_deref() == Some(SECOND) && done(s) > cut)
                .map(|s| done(s) - cut)
                .min()
        });
        let failback = t.heal.and_then(|heal| {
            samples
                .iter()
                .filter(|s| s.region.as_deref() == Some(PREFERRED) && s.at > heal)
                .map(|s| done(s) - heal)
                .min()
        });
        let mut by_region = BTreeMap::new();
        for s in samples {
            *by_region
                .entry(s.region.clone().unwrap_or_else(|| "failed".into()))
                .or_insert(0) += 1;
        }
        Summary {
            connections: samples.len(),
            failures: samples.iter().filter(|s| s.region.is_none()).count(),
            failover,
            failback,
            by_region,
        }
    }

    fn print(&self) {
        let fmt = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        println!("summary");
        println!(
            "  connections  {} ({} failed)",
            self.connections, self.failures
        );
        for (region, n) in &self.by_region {
            println!("    {region:<9}  {n}");
        }
        println!(
            "  failover     {} from the cut to the first connection served by {SECOND}",
            fmt(self.failover)
        );
        println!(
            "  failback     {} from healing to the first connection served by {PREFERRED} again (hold-down 5 s)",
            fmt(self.failback)
        );
    }
}

fn write_report(
    dir: &Path,
    samples: &[Sample],
    t: &Timeline,
    summary: &Summary,
    duration: Duration,
) -> anyhow::Result<PathBuf> {
    let svg = dir.join("timeline.svg");
    plot(&svg, samples, t, duration).context("cannot draw the plot")?;
    let mut csv = String::from("seconds,latency_ms,served_by\n");
    for s in samples {
        csv += &format!(
            "{:.3},{:.1},{}\n",
            s.at.as_secs_f64(),
            s.latency.as_secs_f64() * 1e3,
            s.region.as_deref().unwrap_or("failed")
        );
    }
    std::fs::write(dir.join("samples.csv"), csv)?;
    let fmt = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1e3)
        })
    };
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>strait demo</title>\
         <style>body{{font-family:sans-serif;max-width:1040px;margin:2em auto}}td{{padding:2px 12px}}</style>\
         <h1>strait demo</h1>\
         <p>A client in eu-west opens {} connections a second to <code>{SERVICE}</code>, exported by us-east (preferred) and ap-south. \
         eu-west is cut from us-east at {:.0} s and healed at {:.0} s.</p>\
         <table><tr><td>connections</td><td>{}</td></tr><tr><td>failed</td><td>{}</td></tr>\
         <tr><td>failover (cut to first connection served by ap-south)</td><td>{}</td></tr>\
         <tr><td>failback (heal to first connection served by us-east)</td><td>{}</td></tr></table>\
         <p><img src=\"timeline.svg\" alt=\"latency and serving region over time\"></p>\
         <p>Every connection: <a href=\"samples.csv\">samples.csv</a>. Gateway logs: <a href=\"gateways.log\">gateways.log</a>.</p>",
        CLIENTS * 10,
        t.cut.unwrap_or_default().as_secs_f64(),
        t.heal.unwrap_or_default().as_secs_f64(),
        summary.connections,
        summary.failures,
        fmt(summary.failover),
        fmt(summary.failback),
    );
    let path = dir.join("report.html");
    std::fs::write(&path, html)?;
    Ok(path)
}

fn plot(path: &Path, samples: &[Sample], t: &Timeline, duration: Duration) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let max_ms = samples
        .iter()
        .filter(|s| s.region.is_some())
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .fold(100.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "new connections from eu-west: latency and serving region",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..duration.as_secs_f64(), 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("connect + request + response (ms)")
        .draw()?;
    if let (Some(cut), Some(heal)) = (t.cut, t.heal) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(cut.as_secs_f64(), 0.0), (heal.as_secs_f64(), max_ms)],
                RED.mix(0.08).filled(),
            )))?
            .label("eu-west cut from us-east")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RED.mix(0.2).filled()));
    }
    for (region, color) in [(PREFERRED, BLUE), (SECOND, GREEN)] {
        chart
            .draw_series(
                samples
                    .iter()
                    .filter(|s| s.region.as_deref() == Some(region))
                    .map(|s| {
                        Circle::new(
                            (s.at.as_secs_f64(), s.latency.as_secs_f64() * 1e3),
                            2,
                            color.filled(),
                        )
                    }),
            )?
            .label(format!("served by {region}"))
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
    }
    chart
        .draw_series(
            samples
                .iter()
                .filter(|s| s.region.is_none())
                .map(|s| Cross::new((s.at.as_secs_f64(), max_ms * 0.97), 4, RED)),
        )?
        .label("failed")
        .legend(|(x, y)| Cross::new((x + 6, y), 4, RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
