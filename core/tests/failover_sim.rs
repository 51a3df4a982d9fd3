//! The failover drill of `tests/failover.rs` in virtual time: eu-west with
//! tunnels to us-east (preferred) and ap-south, probes through a simulated
//! link, a new stream every 50 ms, and a cut of the us-east link. Only the
//! sans-IO pieces run (probe trackers, the plane, attempts), so the drill
//! takes microseconds and every coin flip is fixed.

use std::time::{Duration, Instant};

use strait_core::attempt::{Ambiguity, Attempt, AttemptState};
use strait_core::frame::{ServiceAd, StatusCode};
use strait_core::health::{ProbeConfig, ProbeTracker};
use strait_core::plane::{Action, ConnId, Health, PeerInfo, Plane, PlaneConfig};

const MS: Duration = Duration::from_millis(1);

struct Link {
    conn: ConnId,
    tracker: ProbeTracker,
    rtt: Duration,
    in_flight: Vec<(u64, Instant)>,
    last_rx: Instant,
}

fn peer(region: &str) -> PeerInfo {
    PeerInfo::new(
        &format!("spiffe://example.org/region/{region}/gateway/gw"),
        "gw",
        region,
        "",
    )
}

/// Runs the drill; returns, per stream opened after the cut, (opened at,
/// region that accepted it or `None`, delivered to us-east without an
/// answer). `one_way`: requests still reach us-east, answers do not.
fn drill(idempotent: bool, one_way: bool) -> Vec<(Duration, Option<String>, bool)> {
    let start = Instant::now();
    let mut config = PlaneConfig::new("spiffe://example.org/region/eu-west/gateway/a", "eu-west");
    config.hold_down = Duration::from_secs(2);
    let mut plane = Plane::new(config);
    let svc = vec![ServiceAd {
        name: "svc".into(),
        healthy: true,
    }];
    let mut links: Vec<Link> = [("us-east", 80), ("ap-south", 150)]
        .into_iter()
        .map(|(region, rtt)| Link {
            conn: plane.handle_connection_up(peer(region), true, svc.clone(), start),
            tracker: ProbeTracker::new(ProbeConfig::default(), start, None),
            rtt: rtt * MS,
            in_flight: Vec::new(),
            last_rx: start,
        })
        .collect();
    let prefer = vec!["us-east".to_string(), "ap-south".to_string()];
    let cut_at = start + Duration::from_secs(5);
    let mut results = Vec::new();
    let mut now = start;
    let mut next_stream = start + Duration::from_secs(4);
    let end = start + Duration::from_secs(7);
    while now < end {
        now += MS;
        for (i, link) in links.iter_mut().enumerate() {
            let cut = i == 0 && now >= cut_at;
            let due: Vec<u64> = link
                .in_flight
                .iter()
                .filter(|p| p.1 <= now)
                .map(|p| p.0)
                .collect();
            link.in_flight.retain(|p| p.1 > now);
            for seq in due {
                link.tracker.handle_pong(seq, now);
                link.last_rx = now;
            }
            link.tracker.handle_timeout(now);
            while let Some(seq) = link.tracker.poll_probe(now) {
                if !cut {
                    link.in_flight.push((seq, now + link.rtt));
                }
            }
            while link.tracker.poll_event().is_some() {}
            let health = Health {
                state: link.tracker.state(),
                rtt: link.tracker.rtt(),
                loss: link.tracker.loss(),
                missed: link.tracker.consecutive_missed(),
                quiet: now.saturating_duration_since(link.last_rx),
            };
            plane.handle_health(link.conn, health, now);
        }
        while let Some(Action::Close { conn, .. }) = plane.poll_action() {
            plane.handle_connection_closed(conn, now);
        }
        if now >= next_stream {
            next_stream += 50 * MS;
            // One client: attempts until accepted, or until the replay rule
            // says stop. An attempt on the cut link gets no answer; the
            // client learns it when the plane finds the tunnel Down.
            let mut tried = Vec::new();
            let mut outcome = None;
            let mut reached_us_east = false;
            loop {
                let d = plane.route("svc", &prefer, &tried, now, (1, 2));
                let Some(row) = d.chosen_row().cloned() else {
                    break;
                };
                let mut a = Attempt::new();
                a.handle_sent();
                let cut_link = row.region == "us-east" && now >= cut_at;
                if cut_link {
                    reached_us_east |= one_way;
                    a.handle_ambiguous(Ambiguity::TunnelDown);
                } else {
                    a.handle_status(StatusCode::Ok);
                }
                plane.handle_attempt(row.conn.unwrap(), "svc", &prefer, a.state(), now);
                if a.state() == AttemptState::Accepted {
                    outcome = Some(row.region.clone());
                    break;
                }
                if !a.may_replay(idempotent) || !plane.try_retry("svc", now) {
                    break;
                }
                tried.push(row.key.clone());
            }
            if now >= cut_at {
                let delivered_twice = reached_us_east && outcome.as_deref() == Some("ap-south");
                let lost = reached_us_east && outcome.is_none();
                results.push((now - cut_at, outcome, delivered_twice || lost));
            }
        }
    }
    results
}

#[test]
fn without_idempotent_nothing_reaches_two_targets_and_failover_is_prompt() {
    let results = drill(false, true);
    let twice = results.iter().filter(|r| r.2 && r.1.is_some()).count();
    assert_eq!(twice, 0);
    let first_failover = results
        .iter()
        .find(|r| r.1.as_deref() == Some("ap-south"))
        .expect("never failed over")
        .0;
    assert!(
        first_failover < Duration::from_secs(1),
        "{first_failover:?}"
    );
    // Streams sent into the cut before it was found fail; none after.
    let failed: Vec<Duration> = results
        .iter()
        .filter(|r| r.1.is_none())
        .map(|r| r.0)
        .collect();
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|t| *t < Duration::from_secs(1)),
        "{failed:?}"
    );
}

#[test]
fn with_idempotent_no_stream_fails() {
    let results = drill(true, false);
    assert!(results.iter().all(|r| r.1.is_some()), "{results:?}");
    assert!(results.iter().any(|r| r.1.as_deref() == Some("ap-south")));
}
