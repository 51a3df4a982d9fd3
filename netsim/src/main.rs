//! `strait-netsim`: run a simulated WAN from a topology file, and drive a
//! running one (partition, isolate, heal, set, stats).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strait_netsim::control::{Request, request};
use strait_netsim::topology::{DEFAULT_CONTROL, parse_loopback};
use strait_netsim::units::{format_rate, parse_duration, parse_rate, parse_ratio};
use strait_netsim::{LinkChange, Netsim, Topology};

/// A userspace WAN on one machine: relays on loopback that add latency,
/// jitter, loss, reordering, bandwidth limits and partitions between strait
/// gateways.
#[derive(Debug, Parser)]
#[command(name = "strait-netsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the relays of a topology file and its control API, print the
    /// address each gateway dials to reach each other one, and run until
    /// interrupted.
    Run {
        /// The topology file (TOML).
        topology: PathBuf,
        /// Print the relay table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cut the link between two regions (both directions unless --oneway).
    Partition {
        a: String,
        b: String,
        /// Cut only A -> B; B -> A keeps flowing.
        #[arg(long)]
        oneway: bool,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Cut every link into and out of a region.
    Isolate {
        region: String,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Heal the link between two regions, or every link when none is given.
    Heal {
        a: Option<String>,
        b: Option<String>,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Change the impairments between two regions (both directions unless
    /// --oneway). Changes apply to the next packet.
    Set(SetArgs),
    /// Packets and bytes forwarded and dropped (by cause), per link.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlArg,
    },
}

#[derive(Debug, Args)]
struct ControlArg {
    /// Control API address of the running netsim.
    #[arg(long, env = "STRAIT_NETSIM_CONTROL", default_value = DEFAULT_CONTROL, value_parser = parse_loopback)]
    control: SocketAddr,
}

#[derive(Debug, Args)]
struct SetArgs {
    a: String,
    b: String,
    /// Change only A -> B.
    #[arg(long)]
    oneway: bool,
    /// One-way latency, e.g. 40ms.
    #[arg(long, value_parser = parse_duration, conflicts_with = "rtt")]
    latency: Option<Duration>,
    /// Round-trip time; sets the one-way latency to half of it.
    #[arg(long, value_parser = parse_duration)]
    rtt: Option<Duration>,
    /// Extra one-way delay drawn from 0..=JITTER, e.g. 5ms.
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Random loss, e.g. 1% or 0.01.
    #[arg(long, value_parser = parse_ratio)]
    loss: Option<f64>,
    /// Mean loss of bursty (Gilbert-Elliott) loss, e.g. 2%; 0 turns it off.
    #[arg(long, value_parser = parse_ratio)]
    burst_loss: Option<f64>,
    /// Mean burst length in packets for --burst-loss.
    #[arg(long, default_value_t = 3.0, requires = "burst_loss")]
    burst_len: f64,
    /// Probability of delivering a packet twice.
    #[arg(long, value_parser = parse_ratio)]
    duplicate: Option<f64>,
    /// Probability of holding a packet back so later ones overtake it.
    #[arg(long, value_parser = parse_ratio)]
    reorder: Option<f64>,
    /// Bandwidth, e.g. 100mbit or 1gbit, or "unlimited".
    #[arg(long, value_parser = parse_rate_arg)]
    rate: Option<u64>,
    /// Bytes that may queue behind the bandwidth limit before tail drop.
    #[arg(long)]
    queue_bytes: Option<usize>,
    /// Largest datagram carried (0: no limit).
    #[arg(long)]
    mtu: Option<usize>,
    #[command(flatten)]
    control: ControlArg,
}

fn parse_rate_arg(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        Ok(0)
    } else {
        parse_rate(s)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (control, req) = match cli.command {
        Command::Run { topology, json } => return serve(topology, json).await,
        Command::Partition {
            a,
            b,
            oneway,
            control,
        } => (control, Request::Partition { a, b, oneway }),
        Command::Isolate { region, control } => (control, Request::Isolate { region }),
        Command::Heal { a, b, control } => {
            if a.is_some() != b.is_some() {
                anyhow::bail!("heal takes two regions, or none to heal every link");
            }
            (control, Request::Heal { a, b })
        }
        Command::Set(s) => {
            let change = LinkChange {
                latency: s.latency.or(s.rtt.map(|r| r / 2)),
                jitter: s.jitter,
                loss: s.loss,
                burst: s.burst_loss.map(|l| (l, s.burst_len)),
                duplicate: s.duplicate,
                reorder: s.reorder,
                rate_bps: s.rate,
                queue_bytes: s.queue_bytes,
                mtu: s.mtu,
            };
            if change == LinkChange::default() {
                anyhow::bail!(
                    "nothing to set: give at least one of --latency, --rtt, --jitter, --loss, --burst-loss, --duplicate, --reorder, --rate, --queue-bytes, --mtu"
                );
            }
            (
                s.control,
                Request::Set {
                    a: s.a,
                    b: s.b,
                    oneway: s.oneway,
                    change,
                },
            )
        }
        Command::Stats { json, control } => {
            let response = request(control.control, &Request::Stats).await?;
            let links = response.links.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else {
                print_stats(&links);
            }
            return Ok(());
        }
    };
    request(control.control, &req).await?;
    println!("ok");
    Ok(())
}

async fn serve(path: PathBuf, json: bool) -> anyhow::Result<()> {
    let topology = Topology::load(&path)?;
    let sim = Netsim::start(&topology)
        .await
        .with_context(|| format!("cannot start the topology of {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(sim.relays())?);
    } else {
        println!(
            "netsim: {} regions, {} relays, control API on {} (seed {})",
            topology.regions.len(),
            sim.relays().len(),
            sim.control_addr(),
            topology.seed
        );
        println!("{:<28} {:<28} {:<22} TARGET", "FROM", "TO", "DIAL");
        for r in sim.relays() {
            println!(
                "{:<28} {:<28} {:<22} {}",
                format!("{} ({})", r.from_gateway, r.from_region),
                format!("{} ({})", r.to_gateway, r.to_region),
                r.listen,
                r.target
            );
        }
    }
    wait_for_signal().await?;
    tracing::info!("stopping");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn print_stats(links: &[strait_netsim::LinkReport]) {
    println!(
        "{:<26} {:>8} {:>7} {:>6} {:>9} {:>6} {:>10} {:>12} {:>8}  DROPPED BY CAUSE",
        "LINK", "LATENCY", "JITTER", "LOSS", "RATE", "STATE", "PACKETS", "BYTES", "DROPPED"
    );
    for l in links {
        let s = &l.stats;
        println!(
            "{:<26} {:>6.1}ms {:>5.1}ms {:>5.2}% {:>9} {:>6} {:>10} {:>12} {:>8}  partition={} loss={} burst={} queue={} mtu={}",
            format!("{} -> {}", l.from, l.to),
            l.latency_ms,
            l.jitter_ms,
            l.loss * 100.0,
            l.rate_bps.map_or_else(|| "-".to_owned(), format_rate),
            if l.partitioned { "CUT" } else { "up" },
            s.delivered_packets,
            s.delivered_bytes,
            s.dropped(),
            s.dropped_partition,
            s.dropped_loss,
            s.dropped_burst_loss,
            s.dropped_queue_full,
            s.dropped_mtu,
        );
    }
}
