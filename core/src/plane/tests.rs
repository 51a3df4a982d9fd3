use std::time::{Duration, Instant};

use super::*;
use crate::attempt::{Ambiguity, AttemptState, Refusal};
use crate::frame::StatusCode;

const ME: &str = "spiffe://example.org/region/eu-west/gateway/gw-a";

fn peer(region: &str, name: &str) -> PeerInfo {
    PeerInfo::new(
        &format!("spiffe://example.org/region/{region}/gateway/{name}"),
        name,
        region,
        "",
    )
}

fn svc(name: &str, healthy: bool) -> ServiceAd {
    ServiceAd {
        name: name.into(),
        healthy,
    }
}

fn up(rtt_ms: u64) -> Health {
    Health {
        state: TunnelHealth::Up,
        rtt: Some(Duration::from_millis(rtt_ms)),
        loss: 0.0,
        missed: 0,
        quiet: Duration::ZERO,
    }
}

fn down(quiet_ms: u64) -> Health {
    Health {
        state: TunnelHealth::Down,
        rtt: Some(Duration::from_millis(80)),
        loss: 1.0,
        missed: 3,
        quiet: Duration::from_millis(quiet_ms),
    }
}

/// eu-west with tunnels to us-east (preferred) and ap-south, both
/// offering `pay`, settled past their hold-down.
fn mesh() -> (Plane, Instant, ConnId, ConnId) {
    let t0 = Instant::now();
    let mut plane = Plane::new(PlaneConfig::new(ME, "eu-west"));
    let b = plane.handle_connection_up(peer("us-east", "gw-b"), true, vec![svc("pay", true)], t0);
    let c = plane.handle_connection_up(peer("ap-south", "gw-c"), true, vec![svc("pay", true)], t0);
    let later = t0 + Duration::from_secs(10);
    plane.handle_health(b, up(80), later);
    plane.handle_health(c, up(150), later);
    while plane.poll_event().is_some() {}
    (plane, later, b, c)
}

fn prefer() -> Vec<String> {
    vec!["us-east".into(), "ap-south".into()]
}

fn verdict(d: &Decision, conn: ConnId) -> Verdict {
    d.candidates
        .iter()
        .find(|c| c.conn == Some(conn))
        .unwrap()
        .verdict
}

fn excluded(reason: Exclusion) -> Verdict {
    Verdict::Excluded { reason }
}

#[test]
fn the_preferred_region_is_chosen_and_every_candidate_is_explained() {
    let (plane, now, b, c) = mesh();
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(d.chosen, Some(b));
    assert!(matches!(
        verdict(&d, b),
        Verdict::Ranked {
            rank: 1,
            tier: 0,
            class: Class::Settled,
            ..
        }
    ));
    assert!(matches!(
        verdict(&d, c),
        Verdict::Ranked {
            rank: 2,
            tier: 1,
            ..
        }
    ));
    let d = plane.plan("nope", &prefer(), &[], now, (0, 0));
    assert_eq!(d.chosen, None);
    assert_eq!(verdict(&d, b), excluded(Exclusion::NotOffered));
}

#[test]
fn down_draining_target_down_and_tried_are_excluded_with_their_reason() {
    let (mut plane, now, b, c) = mesh();
    plane.handle_health(b, down(0), now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(verdict(&d, b), excluded(Exclusion::Down));
    assert_eq!(d.chosen, Some(c));

    let d = plane.plan(
        "pay",
        &prefer(),
        &[peer("ap-south", "gw-c").id],
        now,
        (0, 0),
    );
    assert_eq!(verdict(&d, c), excluded(Exclusion::Tried));
    assert_eq!(d.chosen, None);

    plane.handle_services(c, vec![svc("pay", false)]);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(verdict(&d, c), excluded(Exclusion::TargetDown));

    plane.handle_services(c, vec![svc("pay", true)]);
    plane.handle_goaway(c);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(verdict(&d, c), excluded(Exclusion::Draining));
    assert!(matches!(
        plane.poll_event(),
        Some(PlaneEvent::HealthChanged {
            to: TunnelHealth::Down,
            ..
        })
    ));
}

#[test]
fn failures_open_the_circuit_then_one_trial_closes_it() {
    let (mut plane, now, b, c) = mesh();
    let ambiguous = AttemptState::Ambiguous(Ambiguity::NoAnswer);
    for _ in 0..3 {
        plane.handle_attempt(b, "pay", &prefer(), ambiguous, now);
    }
    assert!(matches!(
        plane.poll_event(),
        Some(PlaneEvent::CircuitOpened { .. })
    ));
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(verdict(&d, b), excluded(Exclusion::CircuitOpen));
    assert_eq!(d.chosen, Some(c));
    // The cooldown passes: one trial goes to b, the next stream does not.
    let after = now + Duration::from_secs(5);
    assert_eq!(
        plane.route("pay", &prefer(), &[], after, (0, 0)).chosen,
        Some(b)
    );
    assert_eq!(
        plane.route("pay", &prefer(), &[], after, (0, 0)).chosen,
        Some(c)
    );
    plane.handle_attempt(b, "pay", &prefer(), AttemptState::Accepted, after);
    assert!(matches!(
        plane.poll_event(),
        Some(PlaneEvent::CircuitClosed { .. })
    ));
    assert_eq!(
        plane.plan("pay", &prefer(), &[], after, (0, 0)).chosen,
        Some(b)
    );
}

#[test]
fn failover_and_failback_are_events() {
    let (mut plane, now, b, c) = mesh();
    plane.handle_attempt(b, "pay", &prefer(), AttemptState::Accepted, now);
    plane.handle_attempt(c, "pay", &prefer(), AttemptState::Accepted, now);
    assert!(matches!(
        plane.poll_event(),
        Some(PlaneEvent::Failover { ref from, ref to, .. }) if from == "us-east" && to == "ap-south"
    ));
    plane.handle_attempt(b, "pay", &prefer(), AttemptState::Accepted, now);
    assert!(matches!(
        plane.poll_event(),
        Some(PlaneEvent::Failback { .. })
    ));
    // A refusal is a breaker failure, not a failover.
    plane.handle_attempt(
        c,
        "pay",
        &prefer(),
        AttemptState::Refused(Refusal::Status(StatusCode::Overloaded)),
        now,
    );
    assert_eq!(plane.poll_event(), None);
}

#[test]
fn a_recovered_peer_waits_out_its_hold_down() {
    let (mut plane, now, b, c) = mesh();
    plane.handle_health(b, down(0), now);
    let back = now + Duration::from_secs(1);
    plane.handle_health(b, up(80), back);
    let d = plane.plan("pay", &prefer(), &[], back, (0, 0));
    assert!(matches!(
        verdict(&d, b),
        Verdict::Ranked {
            class: Class::HeldDown,
            ..
        }
    ));
    assert_eq!(d.chosen, Some(c));
    let settled = back + Duration::from_secs(5);
    assert_eq!(
        plane.plan("pay", &prefer(), &[], settled, (0, 0)).chosen,
        Some(b)
    );
}

#[test]
fn a_connection_that_replaces_a_working_one_takes_streams_at_once() {
    // The tunnel to us-east moved to another path (the TCP carrier back to
    // UDP): the new connection is no recovered peer.
    let (mut plane, now, b, c) = mesh();
    let moved =
        plane.handle_connection_up(peer("us-east", "gw-b"), true, vec![svc("pay", true)], now);
    plane.handle_health(moved, up(80), now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(d.chosen, Some(moved), "{d:?}");
    assert_ne!(d.chosen, Some(b));
    // One that replaces a Down connection is a peer come back: hold-down.
    plane.handle_health(moved, down(0), now);
    let back =
        plane.handle_connection_up(peer("us-east", "gw-b"), true, vec![svc("pay", true)], now);
    plane.handle_health(back, up(80), now);
    assert_eq!(
        plane.plan("pay", &prefer(), &[], now, (0, 0)).chosen,
        Some(c)
    );
}

#[test]
fn a_down_and_silent_connection_is_closed_at_once() {
    let (mut plane, now, b, _) = mesh();
    plane.handle_health(b, down(300), now);
    assert_eq!(
        plane.poll_action(),
        None,
        "Down but not silent long enough: lossy, not dead"
    );
    plane.handle_health(b, down(750), now + Duration::from_millis(450));
    assert_eq!(
        plane.poll_action(),
        Some(Action::Close {
            conn: b,
            reason: CloseReason::Dead
        })
    );
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert_eq!(verdict(&d, b), excluded(Exclusion::Closed));
    plane.handle_connection_closed(b, now);
    // The peer stays in view, excluded as down, until it is forgotten.
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    let lost = d.candidates.iter().find(|c| c.conn.is_none()).unwrap();
    assert_eq!(lost.region, "us-east");
    assert_eq!(lost.verdict, excluded(Exclusion::Down));
    let much_later = now + Duration::from_secs(601);
    plane.handle_timeout(much_later);
    let d = plane.plan("pay", &prefer(), &[], much_later, (0, 0));
    assert_eq!(d.candidates.len(), 1);
    // A new connection from it takes its place at once.
    let back =
        plane.handle_connection_up(peer("us-east", "gw-b"), true, vec![svc("pay", true)], now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 0));
    assert!(d.candidates.iter().all(|c| c.conn.is_some()));
    assert!(matches!(verdict(&d, back), Verdict::Ranked { .. }));
}

#[test]
fn a_restarted_peer_takes_new_streams_at_once() {
    // The peer was killed: its old connection is still Up here (not yet
    // found Down), and the restarted process dials in again.
    let t0 = Instant::now();
    let mut config = PlaneConfig::new(ME, "eu-west");
    config.dead_after = Duration::from_secs(10);
    let mut plane = Plane::new(config);
    let b = peer("us-east", "gw-b");
    let old = plane.handle_connection_up(b.clone(), false, vec![svc("pay", true)], t0);
    plane.handle_stream_opened(old);
    let new = plane.handle_connection_up(b.clone(), false, vec![svc("pay", true)], t0);
    // The new one takes new streams at once; the old one keeps its stream
    // (QUIC's idle timeout ends it if the peer is gone) and closes once idle.
    assert_eq!(plane.poll_action(), None);
    plane.handle_stream_closed(old, t0 + Duration::from_millis(400));
    plane.handle_timeout(t0 + Duration::from_millis(1400));
    assert_eq!(
        plane.poll_action(),
        Some(Action::Close {
            conn: old,
            reason: CloseReason::Duplicate
        })
    );
    assert!(plane.has_active(&b.id, 0));
    let d = plane.plan("pay", &[], &[], t0, (0, 0));
    assert!(matches!(verdict(&d, new), Verdict::Ranked { .. }));
    // A Down connection is superseded whatever the direction; silent for
    // dead_after, it is closed as dead.
    plane.handle_stream_opened(new);
    plane.handle_health(new, down(750), t0);
    let newer = plane.handle_connection_up(b, true, vec![svc("pay", true)], t0);
    assert_eq!(plane.poll_action(), None);
    assert_eq!(plane.plan("pay", &[], &[], t0, (0, 0)).chosen, Some(newer));
    plane.handle_health(new, down(10_000), t0 + Duration::from_secs(10));
    assert_eq!(
        plane.poll_action(),
        Some(Action::Close {
            conn: new,
            reason: CloseReason::Dead
        })
    );
}

#[test]
fn a_connection_down_but_still_heard_is_superseded_and_keeps_its_streams() {
    // A cut that is healing: the old connection hears the peer again while
    // a redial beside it completes. Its streams must not be reset.
    let t0 = Instant::now();
    let mut plane = Plane::new(PlaneConfig::new(ME, "eu-west"));
    let b = peer("us-east", "gw-b");
    let old = plane.handle_connection_up(b.clone(), true, vec![svc("pay", true)], t0);
    plane.handle_stream_opened(old);
    plane.handle_health(old, down(200), t0);
    assert!(
        !plane.has_live(&b.id, 0),
        "a Down connection is no reason not to dial"
    );
    let new = plane.handle_connection_up(b.clone(), true, vec![svc("pay", true)], t0);
    assert_eq!(plane.poll_action(), None, "nothing is closed");
    plane.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(plane.poll_action(), None, "its streams are kept");
    assert!(plane.has_live(&b.id, 0));
    let role = |p: &Plane, c: ConnId| p.view().conns.iter().find(|v| v.conn == c).unwrap().role;
    assert_eq!(role(&plane, old), "superseded");
    assert_eq!(plane.plan("pay", &[], &[], t0, (0, 0)).chosen, Some(new));
    // It drains: closed once its last stream ended and drain_idle passed.
    plane.handle_stream_closed(old, t0 + Duration::from_secs(30));
    plane.handle_timeout(t0 + Duration::from_secs(31));
    assert_eq!(
        plane.poll_action(),
        Some(Action::Close {
            conn: old,
            reason: CloseReason::Duplicate
        })
    );
    // Our own redial beside a connection that had recovered meanwhile
    // supersedes it too, rather than resetting its streams.
    plane.handle_stream_opened(new);
    let newer = plane.handle_connection_up(b, true, vec![svc("pay", true)], t0);
    assert_eq!(plane.poll_action(), None);
    assert_eq!(role(&plane, new), "superseded");
    assert_eq!(plane.plan("pay", &[], &[], t0, (0, 0)).chosen, Some(newer));
}

#[test]
fn when_both_dial_both_keep_the_same_connection_and_the_other_drains() {
    let t0 = Instant::now();
    let b = peer("us-east", "gw-b");
    // ME sorts before gw-b's ID: the connection ME dialed is kept.
    assert!(ME < b.id.as_str());
    let mut ours = Plane::new(PlaneConfig::new(ME, "eu-west"));
    let accepted = ours.handle_connection_up(b.clone(), false, vec![], t0);
    let dialed = ours.handle_connection_up(b.clone(), true, vec![], t0);
    let mut theirs = Plane::new(PlaneConfig::new(&b.id, "us-east"));
    let me = PeerInfo::new(ME, "gw-a", "eu-west", "");
    let their_dialed = theirs.handle_connection_up(me.clone(), true, vec![], t0);
    let their_accepted = theirs.handle_connection_up(me, false, vec![], t0);
    let role = |p: &Plane, c: ConnId| p.view().conns.iter().find(|v| v.conn == c).unwrap().role;
    assert_eq!(role(&ours, dialed), "active");
    assert_eq!(role(&ours, accepted), "superseded");
    assert_eq!(role(&theirs, their_accepted), "active");
    assert_eq!(role(&theirs, their_dialed), "superseded");
    // The superseded one serves its streams, then closes once idle.
    ours.handle_stream_opened(accepted);
    assert_eq!(ours.poll_timeout(), None);
    ours.handle_stream_closed(accepted, t0 + Duration::from_secs(3));
    let wake = ours.poll_timeout().unwrap();
    assert_eq!(wake, t0 + Duration::from_secs(4));
    ours.handle_timeout(wake - Duration::from_millis(1));
    assert_eq!(ours.poll_action(), None);
    ours.handle_timeout(wake);
    assert_eq!(
        ours.poll_action(),
        Some(Action::Close {
            conn: accepted,
            reason: CloseReason::Duplicate
        })
    );
}

#[test]
fn retry_budget_is_per_service() {
    let (mut plane, now, _, _) = mesh();
    for _ in 0..10 {
        assert!(plane.try_retry("pay", now));
    }
    assert!(!plane.try_retry("pay", now), "the floor of 10 is spent");
    assert!(plane.try_retry("other", now));
    for _ in 0..50 {
        plane.record_open("pay", now);
    }
    assert!(plane.try_retry("pay", now), "20% of 50 opens");
}

#[test]
fn ranks_follow_class_tier_and_rtt() {
    let (mut plane, now, b, c) = mesh();
    let d2 = plane.handle_connection_up(
        peer("us-east", "gw-d"),
        true,
        vec![svc("pay", true)],
        now - Duration::from_secs(10),
    );
    plane.handle_health(d2, up(40), now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 1));
    assert!(matches!(verdict(&d, d2), Verdict::Ranked { rank: 1, .. }));
    assert!(matches!(verdict(&d, b), Verdict::Ranked { rank: 2, .. }));
    assert!(matches!(verdict(&d, c), Verdict::Ranked { rank: 3, .. }));
    // Power of two choices within us-east: the lower RTT wins.
    assert_eq!(d.chosen, Some(d2));
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"verdict\":\"ranked\""), "{json}");
}

/// Two gateways of us-east that share one certificate (one per region)
/// are two peers: both stay active, and when one goes Down its new
/// streams go to its sibling, not to the farther region.
#[test]
fn gateways_sharing_a_certificate_are_peers_of_their_own_and_siblings_come_first() {
    let (mut plane, now, b, c) = mesh();
    let id = peer("us-east", "gw-b").id;
    let b2 = plane.handle_connection_up(
        PeerInfo::new(&id, "gw-b", "us-east", "10.0.0.2:15443"),
        true,
        vec![svc("pay", true)],
        now,
    );
    let later = now + Duration::from_secs(10);
    plane.handle_health(b2, up(80), later);
    let roles: Vec<&str> = plane.view().conns.iter().map(|c| c.role).collect();
    assert_eq!(roles, ["active", "active", "active"]);
    let mut seen = std::collections::BTreeSet::new();
    for coins in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        seen.insert(plane.plan("pay", &prefer(), &[], later, coins).chosen);
    }
    assert_eq!(seen, [Some(b), Some(b2)].into_iter().collect());

    plane.handle_health(b, down(100), later);
    for coins in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        assert_eq!(
            plane.plan("pay", &prefer(), &[], later, coins).chosen,
            Some(b2)
        );
    }
    // With b Down and b2 tried, the next region.
    let key = plane.peer(b2).unwrap().key.clone();
    let d = plane.plan("pay", &prefer(), &[key], later, (0, 1));
    assert_eq!(d.chosen, Some(c));
}

#[test]
fn of_two_siblings_the_one_with_fewer_streams_takes_new_ones() {
    let (mut plane, now, b, _) = mesh();
    let b2 =
        plane.handle_connection_up(peer("us-east", "gw-b2"), true, vec![svc("pay", true)], now);
    let later = now + Duration::from_secs(10);
    plane.handle_health(b2, up(80), later);
    for _ in 0..20 {
        plane.handle_stream_opened(b);
    }
    for coins in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        assert_eq!(
            plane.plan("pay", &prefer(), &[], later, coins).chosen,
            Some(b2)
        );
    }
}

/// An import with a local target: local first while it is healthy, the
/// remote regions (by `prefer`) when it fails, and back to local only
/// after the hold-down; each move is a failover or failback.
#[test]
fn a_local_target_comes_first_fails_over_and_fails_back_after_the_hold_down() {
    let (mut plane, now, b, _) = mesh();
    plane.handle_local("pay", "127.0.0.1:8080", true, now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 1));
    assert!(d.local && d.chosen.is_none(), "{d:?}");
    assert!(d.candidates[0].local);
    assert!(matches!(
        d.candidates[0].verdict,
        Verdict::Ranked {
            rank: 1,
            tier: 0,
            ..
        }
    ));
    assert!(matches!(verdict(&d, b), Verdict::Ranked { tier: 1, .. }));
    plane.handle_local_served("pay", &prefer());

    // Its connect failed for this client: the next candidate, at once.
    let d = plane.plan("pay", &prefer(), &[LOCAL.to_owned()], now, (0, 1));
    assert_eq!((d.local, d.chosen), (false, Some(b)));

    // The health check fails: remote, and a failover is recorded.
    plane.handle_local("pay", "127.0.0.1:8080", false, now);
    let d = plane.plan("pay", &prefer(), &[], now, (0, 1));
    assert_eq!((d.local, d.chosen), (false, Some(b)));
    assert!(matches!(
        d.candidates[0].verdict,
        Verdict::Excluded {
            reason: Exclusion::TargetDown
        }
    ));
    plane.handle_attempt(b, "pay", &prefer(), AttemptState::Accepted, now);
    let events: Vec<PlaneEvent> = std::iter::from_fn(|| plane.poll_event()).collect();
    assert!(events.contains(&PlaneEvent::Failover {
        service: "pay".into(),
        from: LOCAL.into(),
        to: "us-east".into()
    }));

    // Back, but held down while us-east is settled.
    let back = now + Duration::from_secs(1);
    plane.handle_local("pay", "127.0.0.1:8080", true, back);
    let d = plane.plan("pay", &prefer(), &[], back + Duration::from_secs(4), (0, 1));
    assert_eq!((d.local, d.chosen), (false, Some(b)));
    let settled = back + Duration::from_secs(5);
    let d = plane.plan("pay", &prefer(), &[], settled, (0, 1));
    assert!(d.local);
    plane.handle_local_served("pay", &prefer());
    let events: Vec<PlaneEvent> = std::iter::from_fn(|| plane.poll_event()).collect();
    assert!(events.contains(&PlaneEvent::Failback {
        service: "pay".into(),
        from: "us-east".into(),
        to: LOCAL.into()
    }));
    // Held down or not, it is used when no remote candidate is left.
    plane.handle_local("pay", "127.0.0.1:8080", false, settled);
    plane.handle_local("pay", "127.0.0.1:8080", true, settled);
    plane.handle_health(b, down(0), settled);
    let key = |c: ConnId| plane.peer(c).unwrap().key.clone();
    let others: Vec<String> = plane.open_conns().into_iter().map(key).collect();
    let d = plane.plan("pay", &prefer(), &others, settled, (0, 1));
    assert!(d.local, "{d:?}");
}

/// A service only us-east offers: while every direct tunnel to us-east is
/// Down, ap-south (which reaches it) relays; back to direct once us-east
/// is up and past its hold-down.
#[test]
fn a_route_through_a_third_region_only_while_no_direct_one_works() {
    let (mut plane, now, b, c) = mesh();
    plane.handle_services(b, vec![svc("pay", true), svc("only-b", true)]);
    let relay = crate::frame::RelayRoute {
        service: "only-b".into(),
        region: "us-east".into(),
    };
    plane.handle_relayable(c, vec![relay]);
    let d = plane.plan("only-b", &[], &[], now, (0, 1));
    assert_eq!((d.chosen, d.relay_to.as_deref()), (Some(b), None));
    let relay_row = d
        .candidates
        .iter()
        .find(|r| r.relay_to.is_some())
        .expect("the relay is a candidate");
    assert_eq!(relay_row.conn, Some(c));

    plane.handle_health(b, down(0), now);
    let d = plane.plan("only-b", &[], &[], now, (0, 1));
    assert_eq!(
        (d.chosen, d.relay_to.as_deref()),
        (Some(c), Some("us-east"))
    );
    assert_eq!(d.chosen_row().unwrap().relay_to.as_deref(), Some("us-east"));
    // Not for a service ap-south offers itself: that is a direct route.
    let d = plane.plan("pay", &prefer(), &[], now, (0, 1));
    assert_eq!((d.chosen, d.relay_to.as_deref()), (Some(c), None));
    // A relay that was tried is not tried again.
    let key = plane.peer(c).unwrap().key.clone();
    let d = plane.plan("only-b", &[], &[key], now, (0, 1));
    assert_eq!(d.chosen, None);

    // us-east is back: still relayed during its hold-down, then direct.
    let back = now + Duration::from_secs(1);
    plane.handle_health(b, up(80), back);
    let d = plane.plan("only-b", &[], &[], back, (0, 1));
    assert_eq!(d.relay_to.as_deref(), Some("us-east"));
    let d = plane.plan("only-b", &[], &[], back + Duration::from_secs(6), (0, 1));
    assert_eq!((d.chosen, d.relay_to.as_deref()), (Some(b), None));
}

/// A plane with two lanes of gw-b (us-east) offering "pay", up at `t0`.
fn two_lanes(t0: Instant) -> (Plane, PeerInfo, ConnId, ConnId) {
    let mut plane = Plane::new(PlaneConfig::new(ME, "eu-west"));
    let b = peer("us-east", "gw-b");
    let lane0 = plane.handle_connection_up(b.clone(), true, vec![svc("pay", true)], t0);
    let lane1 =
        plane.handle_connection_up(b.clone().with_lane(1), true, vec![svc("pay", true)], t0);
    (plane, b, lane0, lane1)
}

/// Routes `n` new "pay" streams at `at` and keeps them open: how many each
/// connection took.
fn open_streams(
    plane: &mut Plane,
    n: u64,
    at: Instant,
    coins: impl Fn(u64) -> (u64, u64),
) -> std::collections::HashMap<ConnId, usize> {
    let mut on = std::collections::HashMap::new();
    for i in 0..n {
        let conn = plane.route("pay", &[], &[], at, coins(i)).chosen.unwrap();
        plane.handle_stream_opened(conn);
        *on.entry(conn).or_insert(0) += 1;
    }
    on
}

#[test]
fn lanes_of_one_peer_share_its_path_so_streams_spread_whatever_their_probes_sampled() {
    let t0 = Instant::now();
    let (mut plane, _, lane0, lane1) = two_lanes(t0);
    let later = t0 + Duration::from_secs(10);
    // One lane's probes caught a slow moment: 13 ms against 1 ms on the
    // same path. By RTT x streams in flight it would get 2 streams of 40.
    plane.handle_health(lane0, up(13), later);
    plane.handle_health(lane1, up(1), later);
    let on = open_streams(&mut plane, 40, later, |i| (i, i + 1));
    assert!(on.values().all(|n| *n >= 15) && on.len() == 2, "{on:?}");
}

#[test]
fn lanes_of_one_peer_all_carry_streams_and_share_its_tried_entry() {
    let t0 = Instant::now();
    let (mut plane, b, lane0, lane1) = two_lanes(t0);
    // Two lanes are two tunnels, not a replacement.
    assert_eq!(plane.poll_action(), None);
    assert!(plane.has_active(&b.key, 0) && plane.has_active(&b.key, 1));
    let later = t0 + Duration::from_secs(10);
    plane.handle_health(lane0, up(80), later);
    plane.handle_health(lane1, up(81), later);
    // One gateway, one rank, whatever its lanes' RTTs.
    let d = plane.plan("pay", &[], &[], later, (0, 0));
    let rank = |conn| match verdict(&d, conn) {
        Verdict::Ranked { rank, .. } => rank,
        v => panic!("{v:?}"),
    };
    assert_eq!((rank(lane0), rank(lane1)), (1, 1));

    // Streams in flight on one lane send the next ones to the other.
    let on = open_streams(&mut plane, 40, later, |i| (i, i.wrapping_mul(7919)));
    assert_eq!(on.len(), 2, "{on:?}");
    assert!(on.values().all(|n| *n >= 15), "{on:?}");

    // A stream tried on the peer is not retried on its other lane.
    let d = plane.plan("pay", &[], std::slice::from_ref(&b.key), later, (0, 0));
    assert_eq!(d.chosen, None);
    assert_eq!(verdict(&d, lane1), excluded(Exclusion::Tried));

    // A newer connection on a lane supersedes that lane's connection only
    // (its streams go on).
    let again =
        plane.handle_connection_up(b.clone().with_lane(1), true, vec![svc("pay", true)], later);
    assert_eq!(plane.poll_action(), None);
    let role = |c: ConnId| {
        plane
            .view()
            .conns
            .iter()
            .find(|v| v.conn == c)
            .unwrap()
            .role
    };
    assert_eq!(role(lane1), "superseded");
    assert_eq!(role(lane0), "active");
    assert_eq!(role(again), "active");
    // Losing one lane does not lose the peer.
    plane.handle_connection_closed(lane1, later);
    plane.handle_connection_closed(again, later);
    let d = plane.plan("pay", &[], &[], later, (0, 0));
    assert_eq!(d.chosen, Some(lane0));
    assert!(d.candidates.iter().all(|r| r.conn.is_some()), "{d:?}");
}
