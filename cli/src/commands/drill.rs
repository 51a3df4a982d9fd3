//! `strait drill`: plays a fault scenario against running gateways
//! through their admin endpoints (each cut is a black hole the gateways
//! end by themselves) and judges each step with
//! `strait_core::drill::FailoverWatch`: when traffic left the cut region,
//! which streams failed or were replayed, and when the mesh was back where
//! it started.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use strait_core::drill::{Direction, FailoverReport, FailoverWatch, RouteKey};
use strait_gateway::scenario::{Fault, Scenario};

use super::status::{admin_request, get_json};
use crate::args::DrillRun;

/// How often the gateways' routes are read during a step.
const POLL: Duration = Duration::from_millis(100);

struct Gateway {
    admin: String,
    name: String,
    region: String,
}

/// One gateway told to black-hole one region.
#[derive(Debug, Clone, Serialize)]
struct Cut {
    #[serde(skip)]
    gateway: usize,
    name: String,
    region: String,
    direction: &'static str,
}

#[derive(Serialize)]
struct StepReport {
    line: usize,
    at_s: f64,
    fault: String,
    cuts: Vec<Cut>,
    routes_through_cut: usize,
    /// Seconds from the cut until no route went into the cut region.
    failover_s: Option<f64>,
    streams_failed: u64,
    streams_replayed: u64,
    /// Seconds from the end of the cut until routes and tunnels were back.
    returned_s: Option<f64>,
    ok: bool,
}

pub fn run(args: DrillRun) -> anyhow::Result<ExitCode> {
    let path = args.scenario.display().to_string();
    let scenario = Scenario::load(&args.scenario)?;
    for step in &scenario.steps {
        if let Err(why) = step.fault.live() {
            bail!("{path}:{}: step.fault: {why}", step.line);
        }
    }
    let mut gateways = Vec::new();
    for admin in &args.admins {
        let s = get_json(admin, "/status")?;
        gateways.push(Gateway {
            admin: admin.clone(),
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            region: s["region"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let mut plans = Vec::new();
    for step in &scenario.steps {
        let cuts = plan(&step.fault, &gateways)
            .with_context(|| format!("{path}:{}: {}", step.line, step.fault.describe()))?;
        plans.push(cuts);
    }
    if !args.json {
        println!(
            "drill {}: {} steps, {} gateways, settle {}",
            scenario.name.as_deref().unwrap_or(&path),
            scenario.steps.len(),
            gateways.len(),
            humantime::format_duration(scenario.settle)
        );
        for (step, cuts) in scenario.steps.iter().zip(&plans) {
            println!(
                "  at {:>6}  {}\n            {}",
                humantime::format_duration(step.at).to_string(),
                step.fault.describe(),
                describe_cuts(cuts)
            );
        }
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }

    let start = Instant::now();
    let mut reports = Vec::new();
    for (step, cuts) in scenario.steps.iter().zip(&plans) {
        sleep_until(start + step.at);
        let report = play(step, cuts, &gateways, scenario.settle, start)?;
        if !args.json {
            print_report(&report);
        }
        reports.push(report);
    }
    let ok = reports.iter().all(|r| r.ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!(
            "\n{} of {} steps failed over and returned to where they started",
            reports.iter().filter(|r| r.ok).count(),
            reports.len()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn end(admin: &str, id: Option<u64>) -> anyhow::Result<ExitCode> {
    let path = match id {
        Some(id) => format!("/drill/end?id={id}"),
        None => "/drill/end".to_owned(),
    };
    let body: Value = serde_json::from_str(&admin_request(admin, "POST", &path)?)?;
    let ended: Vec<String> = body["ended"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.to_string())
        .collect();
    if ended.is_empty() {
        println!("no drill was in force");
    } else {
        println!("ended drill {}", ended.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Which gateway black-holes which region for a fault between `from` and
/// `to`: both sides cut each other; one way, `from`'s gateways drop what
/// they send to `to` (or, with none of `from`'s gateways given, `to`'s
/// drop what they receive from `from`).
fn plan(fault: &Fault, gateways: &[Gateway]) -> anyhow::Result<Vec<Cut>> {
    let (from, to, one_way) = match fault {
        Fault::Partition {
            from, to, one_way, ..
        } => (from, to, *one_way),
        Fault::Flap { from, to, .. } => (from, to, false),
        other => bail!("{}", other.live().err().unwrap_or_default()),
    };
    let cut = |region: &str, toward: &str, direction: Direction| -> Vec<Cut> {
        gateways
            .iter()
            .enumerate()
            .filter(|(_, g)| g.region == region)
            .map(|(i, g)| Cut {
                gateway: i,
                name: g.name.clone(),
                region: toward.to_owned(),
                direction: direction.as_str(),
            })
            .collect()
    };
    let cuts = if one_way {
        let out = cut(from, to, Direction::Out);
        if out.is_empty() {
            cut(to, from, Direction::In)
        } else {
            out
        }
    } else {
        let mut both = cut(from, to, Direction::Both);
        both.extend(cut(to, from, Direction::Both));
        both
    };
    if cuts.is_empty() {
        let mut regions: Vec<&str> = gateways.iter().map(|g| g.region.as_str()).collect();
        regions.sort();
        regions.dedup();
        bail!(
            "no gateway given with --admin is in region {from} or {to} (they are in {})",
            regions.join(", ")
        );
    }
    Ok(cuts)
}

fn describe_cuts(cuts: &[Cut]) -> String {
    cuts.iter()
        .map(|c| format!("{} cuts {} ({})", c.name, c.region, c.direction))
        .collect::<Vec<_>>()
        .join("; ")
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Where every import of every gateway would send its next stream (the
/// region of the gateway that ends it), and how many tunnels are up; `None`
/// when a gateway did not answer.
fn observe(gateways: &[Gateway]) -> Option<(BTreeMap<RouteKey, Option<String>>, usize)> {
    let mut routes = BTreeMap::new();
    let mut up = 0;
    for g in gateways {
        let s = get_json(&g.admin, "/status").ok()?;
        up += s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "up")
            .count();
        for r in s["routes"].as_array().into_iter().flatten() {
            let key = RouteKey {
                gateway: g.name.clone(),
                service: r["service"].as_str().unwrap_or_default().to_owned(),
            };
            routes.insert(key, route_region(r, &g.region));
        }
    }
    Some((routes, up))
}

/// The region a route decision ends in: the relay's target, the chosen
/// gateway's region, or this gateway's own for its local target.
fn route_region(decision: &Value, own: &str) -> Option<String> {
    if decision["local"] == true {
        return Some(format!("{own} (local)"));
    }
    if let Some(r) = decision["relay_to"].as_str() {
        return Some(r.to_owned());
    }
    let chosen = &decision["chosen"];
    if chosen.is_null() {
        return None;
    }
    decision["candidates"]
        .as_array()?
        .iter()
        .find(|c| &c["conn"] == chosen && c["relay_to"].is_null())
        .and_then(|c| c["region"].as_str())
        .map(str::to_owned)
}

/// Import streams that failed (any outcome but ok and idle) and streams
/// replayed, summed over the gateways.
fn stream_counts(gateways: &[Gateway]) -> (u64, u64) {
    let mut failed = 0.0;
    let mut replayed = 0.0;
    for g in gateways {
        let Ok(text) = admin_request(&g.admin, "GET", "/metrics") else {
            continue;
        };
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("strait_streams_total{")
                && series.contains("side=\"import\"")
                && !series.contains("outcome=\"ok\"")
                && !series.contains("outcome=\"idle\"")
            {
                failed += value;
            } else if series.starts_with("strait_stream_retries_total") {
                replayed += value;
            }
        }
    }
    (failed as u64, replayed as u64)
}

fn black_hole(g: &Gateway, cut: &Cut, duration: Duration) -> anyhow::Result<()> {
    let path = format!(
        "/drill/blackhole?region={}&direction={}&duration={}ms",
        cut.region,
        cut.direction,
        duration.as_millis()
    );
    admin_request(&g.admin, "POST", &path)
        .with_context(|| format!("{} would not start the drill", g.name))?;
    Ok(())
}

fn play(
    step: &strait_gateway::scenario::Step,
    cuts: &[Cut],
    gateways: &[Gateway],
    settle: Duration,
    start: Instant,
) -> anyhow::Result<StepReport> {
    let (baseline, tunnels_up) =
        observe(gateways).context("a gateway did not answer /status before the step")?;
    let (failed_before, replayed_before) = stream_counts(gateways);
    let mut cut_from: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in cuts {
        cut_from
            .entry(gateways[c.gateway].name.clone())
            .or_default()
            .push(c.region.clone());
    }
    let (windows, cycle) = match &step.fault {
        Fault::Flap {
            on, off, cycles, ..
        } => (*cycles, (*on, *off)),
        other => (1, (other.duration(), Duration::ZERO)),
    };
    let began = Instant::now();
    let mut watch = FailoverWatch::new(cut_from, baseline, tunnels_up, began);
    for w in 0..windows {
        for c in cuts {
            black_hole(&gateways[c.gateway], c, cycle.0)?;
        }
        let lifted = began + (cycle.0 + cycle.1) * w + cycle.0;
        watch_until(&mut watch, gateways, lifted);
        sleep_until(lifted + cycle.1);
    }
    let ended = began + (cycle.0 + cycle.1) * (windows - 1) + cycle.0;
    watch.cut_ended(ended);
    let deadline = ended + settle;
    while !watch.has_returned() && Instant::now() < deadline {
        if let Some((routes, up)) = observe(gateways) {
            watch.observe(&routes, up, Instant::now());
        }
        std::thread::sleep(POLL);
    }
    let (failed_after, replayed_after) = stream_counts(gateways);
    let FailoverReport {
        routes_through_cut,
        failover,
        returned,
    } = watch.report();
    Ok(StepReport {
        line: step.line,
        at_s: began.duration_since(start).as_secs_f64(),
        fault: step.fault.describe(),
        cuts: cuts.to_vec(),
        routes_through_cut,
        failover_s: failover.map(|d| d.as_secs_f64()),
        streams_failed: failed_after.saturating_sub(failed_before),
        streams_replayed: replayed_after.saturating_sub(replayed_before),
        returned_s: returned.map(|d| d.as_secs_f64()),
        ok: (routes_through_cut == 0 || failover.is_some()) && returned.is_some(),
    })
}

/// Observes until `until`.
fn watch_until(watch: &mut FailoverWatch, gateways: &[Gateway], until: Instant) {
    while Instant::now() < until {
        if let Some((routes, up)) = observe(gateways) {
            watch.observe(&routes, up, Instant::now());
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

fn print_report(r: &StepReport) {
    let secs = |v: Option<f64>, none: &str| v.map_or(none.to_owned(), |s| format!("{s:.2} s"));
    println!(
        "\nstep on line {} at {:.1}s: {}\n  cut: {}\n  routes into the cut before: {}; traffic left it after {}\n  import streams failed: {}, replayed: {}\n  back to where it was {} after the cut ended{}",
        r.line,
        r.at_s,
        r.fault,
        describe_cuts(&r.cuts),
        r.routes_through_cut,
        if r.routes_through_cut == 0 {
            "- (none went there)".to_owned()
        } else {
            secs(r.failover_s, "never, while the cut lasted")
        },
        r.streams_failed,
        r.streams_replayed,
        secs(r.returned_s, "not"),
        if r.ok { "" } else { "  FAILED" }
    );
}
