//! Drills against live gateways, sans-IO. A team rehearses a regional
//! partition in production by telling gateways (through their admin
//! endpoint) to black-hole their tunnels to a region for a bounded time.
//!
//! [`Drills`] is a gateway's book of black holes in force: each has a
//! region, a direction and an end it reaches by itself, so a drill whose
//! runner died still ends. [`FailoverWatch`] is the runner's judge: fed
//! with where each import's next stream would go before, during and after
//! a cut, it says when traffic left the cut region and when the mesh was
//! back where it started.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Which packets of a black hole are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// What this gateway sends to the region.
    Out,
    /// What this gateway receives from the region.
    In,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }

    pub fn drops_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn drops_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

impl std::str::FromStr for Direction {
    type Err = DrillError;
    fn from_str(s: &str) -> Result<Self, DrillError> {
        match s {
            "out" => Ok(Direction::Out),
            "in" => Ok(Direction::In),
            "both" => Ok(Direction::Both),
            _ => Err(DrillError::Direction(s.to_owned())),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a drill could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrillError {
    #[error("direction {0:?} is not one of out, in, both")]
    Direction(String),
    #[error("a drill needs a duration above zero")]
    NoDuration,
    #[error("a drill lasts at most {max:?}; {asked:?} was asked")]
    TooLong { asked: Duration, max: Duration },
    #[error("region {0:?} is this gateway's own region; a drill cuts tunnels to another region")]
    OwnRegion(String),
    #[error("no drill {0} is in force")]
    Unknown(u64),
}

/// One black hole in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlackHole {
    pub id: u64,
    pub region: String,
    pub direction: Direction,
    pub started: Instant,
    pub until: Instant,
}

/// The longest black hole a gateway accepts: a drill is a rehearsal, and
/// one that nobody ends must end by itself soon.
pub const MAX_DRILL: Duration = Duration::from_secs(15 * 60);

/// A gateway's black holes in force.
#[derive(Debug)]
pub struct Drills {
    own_region: String,
    active: Vec<BlackHole>,
    next_id: u64,
}

impl Drills {
    pub fn new(own_region: &str) -> Self {
        Drills {
            own_region: own_region.to_owned(),
            active: Vec::new(),
            next_id: 1,
        }
    }

    /// Starts a black hole to `region` that ends by itself `duration`
    /// after `now`.
    pub fn start(
        &mut self,
        region: &str,
        direction: Direction,
        duration: Duration,
        now: Instant,
    ) -> Result<BlackHole, DrillError> {
        if duration.is_zero() {
            return Err(DrillError::NoDuration);
        }
        if duration > MAX_DRILL {
            return Err(DrillError::TooLong {
                asked: duration,
                max: MAX_DRILL,
            });
        }
        if region == self.own_region {
            return Err(DrillError::OwnRegion(region.to_owned()));
        }
        let hole = BlackHole {
            id: self.next_id,
            region: region.to_owned(),
            direction,
            started: now,
            until: now + duration,
        };
        self.next_id += 1;
        self.active.push(hole.clone());
        Ok(hole)
    }

    /// Ends black hole `id` before its time.
    pub fn end(&mut self, id: u64) -> Result<BlackHole, DrillError> {
        let i = self
            .active
            .iter()
            .position(|h| h.id == id)
            .ok_or(DrillError::Unknown(id))?;
        Ok(self.active.remove(i))
    }

    /// Ends every black hole.
    pub fn end_all(&mut self) -> Vec<BlackHole> {
        std::mem::take(&mut self.active)
    }

    /// Removes and returns the black holes whose time is up.
    pub fn expire(&mut self, now: Instant) -> Vec<BlackHole> {
        let (done, keep) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|h| h.until <= now);
        self.active = keep;
        done
    }

    pub fn active(&self) -> &[BlackHole] {
        &self.active
    }

    /// When the next black hole ends.
    pub fn next_end(&self) -> Option<Instant> {
        self.active.iter().map(|h| h.until).min()
    }

    /// The regions whose packets are dropped, (outgoing, incoming).
    pub fn cut_regions(&self) -> (Vec<String>, Vec<String>) {
        let mut out = Vec::new();
        let mut inc = Vec::new();
        for h in &self.active {
            if h.direction.drops_out() && !out.contains(&h.region) {
                out.push(h.region.clone());
            }
            if h.direction.drops_in() && !inc.contains(&h.region) {
                inc.push(h.region.clone());
            }
        }
        (out, inc)
    }
}

/// One import of one gateway. A route map holds, for each, the region of
/// the gateway its next stream would end at (`None`: nowhere, or the
/// import's local target).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteKey {
    pub gateway: String,
    pub service: String,
}

/// The judge of one cut: when traffic left the cut regions, and when every
/// route and tunnel was back as it was before.
#[derive(Debug)]
pub struct FailoverWatch {
    /// The regions each gateway is cut from.
    cut: BTreeMap<String, Vec<String>>,
    baseline: BTreeMap<RouteKey, Option<String>>,
    baseline_tunnels_up: usize,
    started: Instant,
    ended: Option<Instant>,
    moved_at: Option<Instant>,
    returned_at: Option<Instant>,
}

/// What a watch concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverReport {
    /// Routes that pointed into a cut region before the cut.
    pub routes_through_cut: usize,
    /// From the start of the cut until no route pointed into a cut region
    /// (`None`: never, while the cut lasted).
    pub failover: Option<Duration>,
    /// From the end of the cut until every route and tunnel was as before
    /// (`None`: not yet).
    pub returned: Option<Duration>,
}

impl FailoverWatch {
    /// `cut`: the regions each gateway (by name) is cut from; `baseline`:
    /// where each route went just before the cut, and how many tunnels
    /// were up.
    pub fn new(
        cut: BTreeMap<String, Vec<String>>,
        baseline: BTreeMap<RouteKey, Option<String>>,
        baseline_tunnels_up: usize,
        started: Instant,
    ) -> Self {
        FailoverWatch {
            cut,
            baseline,
            baseline_tunnels_up,
            started,
            ended: None,
            moved_at: None,
            returned_at: None,
        }
    }

    /// The cut was lifted at `now`.
    pub fn cut_ended(&mut self, now: Instant) {
        self.ended.get_or_insert(now);
    }

    fn routes_through_cut(&self, routes: &BTreeMap<RouteKey, Option<String>>) -> usize {
        routes
            .iter()
            .filter(|(k, r)| {
                r.as_ref().is_some_and(|r| {
                    self.cut
                        .get(&k.gateway)
                        .is_some_and(|regions| regions.contains(r))
                })
            })
            .count()
    }

    /// Where the routes go at `now`, and how many tunnels are up.
    pub fn observe(
        &mut self,
        routes: &BTreeMap<RouteKey, Option<String>>,
        tunnels_up: usize,
        now: Instant,
    ) {
        match self.ended {
            None => {
                if self.moved_at.is_none() && self.routes_through_cut(routes) == 0 {
                    self.moved_at = Some(now);
                }
            }
            Some(_) => {
                let same = self
                    .baseline
                    .iter()
                    .all(|(k, v)| routes.get(k).is_some_and(|now| now == v));
                if same && tunnels_up >= self.baseline_tunnels_up {
                    self.returned_at.get_or_insert(now);
                } else {
                    self.returned_at = None;
                }
            }
        }
    }

    /// Whether the mesh is back as it was before the cut.
    pub fn has_returned(&self) -> bool {
        self.returned_at.is_some()
    }

    pub fn report(&self) -> FailoverReport {
        FailoverReport {
            routes_through_cut: self.routes_through_cut(&self.baseline),
            failover: self.moved_at.map(|t| t.duration_since(self.started)),
            returned: self
                .returned_at
                .zip(self.ended)
                .map(|(r, e)| r.saturating_duration_since(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn black_holes_end_by_themselves_and_are_bounded() {
        let now = t0();
        let mut d = Drills::new("eu-west");
        assert_eq!(
            d.start("us-east", Direction::Both, Duration::ZERO, now),
            Err(DrillError::NoDuration)
        );
        assert!(matches!(
            d.start("us-east", Direction::Both, MAX_DRILL * 2, now),
            Err(DrillError::TooLong { .. })
        ));
        assert_eq!(
            d.start("eu-west", Direction::Both, Duration::from_secs(1), now),
            Err(DrillError::OwnRegion("eu-west".into()))
        );
        let a = d
            .start("us-east", Direction::Out, Duration::from_secs(10), now)
            .unwrap();
        let b = d
            .start("ap-south", Direction::Both, Duration::from_secs(20), now)
            .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(
            d.cut_regions(),
            (
                vec!["us-east".to_string(), "ap-south".to_string()],
                vec!["ap-south".to_string()]
            )
        );
        assert_eq!(d.next_end(), Some(now + Duration::from_secs(10)));
        assert!(d.expire(now + Duration::from_secs(9)).is_empty());
        assert_eq!(d.expire(now + Duration::from_secs(10)), vec![a]);
        assert_eq!(d.cut_regions().0, vec!["ap-south".to_string()]);
        assert_eq!(d.end(99), Err(DrillError::Unknown(99)));
        assert_eq!(d.end(b.id).unwrap().region, "ap-south");
        assert!(d.active().is_empty() && d.next_end().is_none());
    }

    #[test]
    fn directions_parse_and_say_what_they_drop() {
        assert_eq!("out".parse::<Direction>().unwrap(), Direction::Out);
        assert!("sideways".parse::<Direction>().is_err());
        assert!(Direction::Both.drops_in() && Direction::Both.drops_out());
        assert!(!Direction::In.drops_out() && Direction::In.drops_in());
    }

    fn routes(of: &[(&str, &str, Option<&str>)]) -> BTreeMap<RouteKey, Option<String>> {
        of.iter()
            .map(|(g, s, r)| {
                (
                    RouteKey {
                        gateway: g.to_string(),
                        service: s.to_string(),
                    },
                    r.map(str::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn failover_is_when_the_last_route_left_and_return_when_all_came_back() {
        let now = t0();
        let before = routes(&[
            ("e1", "kv", Some("us-east")),
            ("e2", "kv", Some("us-east")),
            ("e1", "web", Some("ap-south")),
        ]);
        let cut = [("e1", "us-east"), ("e2", "us-east")]
            .iter()
            .map(|(g, r)| (g.to_string(), vec![r.to_string()]))
            .collect();
        let mut w = FailoverWatch::new(cut, before.clone(), 4, now);
        assert_eq!(w.report().routes_through_cut, 2);
        let half = routes(&[
            ("e1", "kv", Some("ap-south")),
            ("e2", "kv", Some("us-east")),
            ("e1", "web", Some("ap-south")),
        ]);
        w.observe(&half, 3, now + Duration::from_millis(300));
        assert_eq!(w.report().failover, None);
        let moved = routes(&[
            ("e1", "kv", Some("ap-south")),
            ("e2", "kv", Some("ap-south")),
            ("e1", "web", Some("ap-south")),
        ]);
        w.observe(&moved, 2, now + Duration::from_millis(600));
        w.observe(&before, 2, now + Duration::from_millis(900));
        assert_eq!(w.report().failover, Some(Duration::from_millis(600)));
        w.cut_ended(now + Duration::from_secs(10));
        // Routes back but a tunnel still down: not yet returned.
        w.observe(&before, 3, now + Duration::from_secs(11));
        assert!(!w.has_returned());
        w.observe(&before, 4, now + Duration::from_secs(12));
        // A flap after the return starts the count again.
        w.observe(&moved, 4, now + Duration::from_secs(13));
        assert!(!w.has_returned());
        w.observe(&before, 4, now + Duration::from_secs(14));
        assert!(w.has_returned());
        assert_eq!(w.report().returned, Some(Duration::from_secs(4)));
    }
}
