//! Route choice, sans-IO: which of the eligible candidates a new stream
//! goes to, the last step of `plane::Plane::plan`. A pure function over a
//! snapshot of candidates; it never performs I/O, and the caller supplies
//! the randomness, so tests decide every coin flip.
//!
//! Candidates are ordered in tiers: the import's `prefer` list when given,
//! otherwise the gateway's own region first, then the rest. Health ranks
//! above tiers: settled Up candidates first, then Up ones still within
//! their failback hold-down, then suspect (a missed probe) or Degraded
//! ones; Down ones are never chosen. Inside a tier, power of two choices on
//! smoothed RTT weighted by streams in flight.

use std::time::Duration;

use crate::health::TunnelHealth;

/// One peer that offers the service, as the router sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub region: &'a str,
    pub health: TunnelHealth,
    pub rtt: Option<Duration>,
    /// Its latest probe went unanswered: not Down yet, but an Up candidate
    /// without a missed probe is better. This moves new streams off a cut
    /// path one probe timeout after the cut instead of three.
    pub suspect: bool,
    /// Came up (or back) less than the hold-down period ago: usable, but an
    /// established candidate is preferred, so a flapping region does not
    /// pull traffic back and forth.
    pub held: bool,
    /// Streams in flight on it: of two equally fast candidates the less
    /// loaded wins.
    pub active: usize,
}

impl Candidate<'_> {
    /// Lower is better: Up and settled, then Up but within its hold-down,
    /// then Up with a missed probe or Degraded; Down never.
    fn rank(&self) -> Option<u8> {
        match self.health {
            TunnelHealth::Down => None,
            TunnelHealth::Up if !self.suspect && !self.held => Some(0),
            TunnelHealth::Up if !self.suspect => Some(1),
            TunnelHealth::Up | TunnelHealth::Degraded => Some(2),
        }
    }
}

/// The tier of a region: lower is preferred.
pub fn tier(region: &str, prefer: &[String], own_region: &str) -> usize {
    if prefer.is_empty() {
        usize::from(region != own_region)
    } else {
        prefer
            .iter()
            .position(|p| p == region)
            .unwrap_or(prefer.len())
    }
}

/// What two choices compare: smoothed RTT weighted by the streams in
/// flight plus one (linkerd's "peak EWMA times pending" idea), so a gateway
/// that holds most streams yields new ones to an equally near sibling. An
/// unknown RTT counts as a second.
fn cost(c: &Candidate<'_>) -> u128 {
    let rtt = c.rtt.unwrap_or(Duration::from_secs(1)).as_micros().max(1);
    rtt * (c.active as u128 + 1)
}

/// Chooses among `candidates`; `coins` are two random numbers from the
/// caller. Returns the index of the chosen candidate.
pub fn choose(
    candidates: &[Candidate<'_>],
    prefer: &[String],
    own_region: &str,
    coins: (u64, u64),
) -> Option<usize> {
    for wanted in 0..=2u8 {
        let best_tier = candidates
            .iter()
            .filter(|c| c.rank() == Some(wanted))
            .map(|c| tier(c.region, prefer, own_region))
            .min();
        let Some(best_tier) = best_tier else { continue };
        let pool: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.rank() == Some(wanted) && tier(c.region, prefer, own_region) == best_tier
            })
            .map(|(i, _)| i)
            .collect();
        if pool.len() == 1 {
            return Some(pool[0]);
        }
        // Power of two choices: two distinct random picks, the faster wins.
        let a = pool[(coins.0 % pool.len() as u64) as usize];
        let mut b = pool[(coins.1 % pool.len() as u64) as usize];
        if a == b {
            b = pool[((coins.1 + 1) % pool.len() as u64) as usize];
        }
        return Some(if cost(&candidates[b]) < cost(&candidates[a]) {
            b
        } else {
            a
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(region: &str, health: TunnelHealth, rtt_ms: u64) -> Candidate<'_> {
        Candidate {
            region,
            health,
            rtt: Some(Duration::from_millis(rtt_ms)),
            suspect: false,
            held: false,
            active: 0,
        }
    }

    #[test]
    fn a_fresh_peer_beats_a_suspect_one() {
        let prefer = vec!["us-east".to_string(), "ap-south".to_string()];
        let mut cands = vec![c("us-east", UP, 80), c("ap-south", UP, 150)];
        cands[0].suspect = true;
        cands[1].held = true;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(1));
    }

    #[test]
    fn a_recovering_preferred_peer_waits_out_its_hold_down() {
        let prefer = vec!["us-east".to_string(), "ap-south".to_string()];
        let mut cands = vec![c("us-east", UP, 80), c("ap-south", UP, 150)];
        cands[0].held = true;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(1));
        cands[0].held = false;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(0));
        // At start every tunnel is new: the tiers still decide.
        cands[0].held = true;
        cands[1].held = true;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(0));
    }

    #[test]
    fn a_suspect_preferred_peer_yields_to_a_healthy_second_choice() {
        let prefer = vec!["us-east".to_string(), "ap-south".to_string()];
        let mut cands = vec![c("us-east", UP, 80), c("ap-south", UP, 150)];
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(0));
        cands[0].suspect = true;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(1));
        // With no better choice, a suspect peer is still used.
        cands[1].health = DOWN;
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(0));
    }

    const UP: TunnelHealth = TunnelHealth::Up;
    const DEG: TunnelHealth = TunnelHealth::Degraded;
    const DOWN: TunnelHealth = TunnelHealth::Down;

    #[test]
    fn prefer_list_decides_the_tier() {
        let prefer = vec!["us-east".to_string(), "ap-south".to_string()];
        let cands = [c("ap-south", UP, 10), c("us-east", UP, 90)];
        for coins in [(0, 0), (0, 1), (1, 0), (7, 3)] {
            assert_eq!(choose(&cands, &prefer, "eu-west", coins), Some(1));
        }
    }

    #[test]
    fn own_region_first_without_a_prefer_list() {
        let cands = [c("us-east", UP, 1), c("eu-west", UP, 50)];
        assert_eq!(choose(&cands, &[], "eu-west", (0, 1)), Some(1));
    }

    #[test]
    fn down_is_never_chosen_and_degraded_only_when_nothing_is_up() {
        let prefer = vec!["us-east".to_string()];
        let cands = [c("us-east", DOWN, 1), c("ap-south", UP, 200)];
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(1));
        let cands = [c("us-east", DEG, 1), c("ap-south", UP, 200)];
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(1));
        let cands = [c("us-east", DEG, 1), c("ap-south", DOWN, 200)];
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), Some(0));
        let cands = [c("us-east", DOWN, 1)];
        assert_eq!(choose(&cands, &prefer, "eu-west", (0, 0)), None);
        assert_eq!(choose(&[], &prefer, "eu-west", (0, 0)), None);
    }

    #[test]
    fn two_choices_take_the_lower_rtt() {
        let cands = [c("x", UP, 80), c("x", UP, 20), c("x", UP, 50)];
        assert_eq!(choose(&cands, &[], "x", (0, 1)), Some(1));
        assert_eq!(choose(&cands, &[], "x", (0, 2)), Some(2));
        // Equal coins still compare two different candidates.
        assert_eq!(choose(&cands, &[], "x", (0, 0)), Some(1));
    }

    #[test]
    fn of_two_equally_near_gateways_the_less_loaded_wins() {
        let mut cands = [c("x", UP, 20), c("x", UP, 20)];
        cands[0].active = 30;
        cands[1].active = 2;
        for coins in [(0, 1), (1, 0)] {
            assert_eq!(choose(&cands, &[], "x", coins), Some(1));
        }
        // Load only weighs against latency: a far idle one still loses to
        // a near one with a few streams.
        let mut cands = [c("x", UP, 10), c("x", UP, 200)];
        cands[0].active = 3;
        assert_eq!(choose(&cands, &[], "x", (0, 1)), Some(0));
    }
}
