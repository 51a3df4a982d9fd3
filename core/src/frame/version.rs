//! What two gateways agree on in HELLO: the highest protocol version both
//! speak, and the capabilities both offer. A pure function of the two
//! HELLOs, so either side reaches the same answer without another round.

use serde::{Deserialize, Serialize};

use super::Hello;

/// The highest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The protocol versions this build speaks. Keeping the previous version
/// in the range for one release is what lets adjacent versions talk.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange::new(1, PROTOCOL_VERSION);

/// Optional features this build offers in HELLO. A feature that changes
/// what is sent is used only when both sides offered it.
pub const CAPABILITIES: &[&str] = &[LANES];

/// Several connections per peer: a gateway that offers it tells each
/// connection's lane in HELLO and keeps one connection per lane, so a
/// dialer opens lanes beyond the first only to a peer that offered it (an
/// older one would take a second connection for a replacement of the
/// first).
pub const LANES: &str = "lanes";

/// Protocol versions from `min` to `max`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionRange {
    pub min: u16,
    pub max: u16,
}

impl VersionRange {
    pub const fn new(min: u16, max: u16) -> Self {
        VersionRange { min, max }
    }

    /// The highest version in both ranges, if they overlap.
    pub fn highest_common(self, other: VersionRange) -> Option<u16> {
        let lo = self.min.max(other.min);
        let hi = self.max.min(other.max);
        (lo <= hi).then_some(hi)
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// What both gateways of a tunnel speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The highest version in both ranges.
    pub version: u16,
    /// Capabilities both offered, in our order, without repeats.
    pub capabilities: Vec<String>,
}

/// Two version ranges that do not overlap: these gateways cannot talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no common protocol version: this gateway speaks {ours}, the peer {theirs}")]
pub struct VersionMismatch {
    pub ours: VersionRange,
    pub theirs: VersionRange,
}

/// Agrees on a version and capabilities from our HELLO and theirs. An
/// inverted range (`min > max`) overlaps nothing.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<Negotiated, VersionMismatch> {
    let version = ours
        .versions
        .highest_common(theirs.versions)
        .ok_or(VersionMismatch {
            ours: ours.versions,
            theirs: theirs.versions,
        })?;
    let mut capabilities: Vec<String> = Vec::new();
    for c in &ours.capabilities {
        if theirs.capabilities.contains(c) && !capabilities.contains(c) {
            capabilities.push(c.clone());
        }
    }
    Ok(Negotiated {
        version,
        capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16, capabilities: &[&str]) -> Hello {
        Hello {
            versions: VersionRange::new(min, max),
            name: "gw".into(),
            region: "r".into(),
            services: vec![],
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            instance: String::new(),
            advertise: String::new(),
            lane: 0,
        }
    }

    #[test]
    fn the_highest_common_version_wins() {
        let got = negotiate(&hello(1, 2, &[]), &hello(2, 5, &[])).unwrap();
        assert_eq!(got.version, 2);
        let got = negotiate(&hello(1, 3, &[]), &hello(1, 3, &[])).unwrap();
        assert_eq!(got.version, 3);
        // Symmetric: both sides reach the same version.
        for (a, b) in [((1, 4), (3, 9)), ((2, 2), (1, 7)), ((1, 1), (1, 1))] {
            let x = negotiate(&hello(a.0, a.1, &[]), &hello(b.0, b.1, &[])).unwrap();
            let y = negotiate(&hello(b.0, b.1, &[]), &hello(a.0, a.1, &[])).unwrap();
            assert_eq!(x.version, y.version);
        }
    }

    #[test]
    fn disjoint_or_inverted_ranges_name_both() {
        let err = negotiate(&hello(1, 1, &[]), &hello(5, 7, &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no common protocol version: this gateway speaks 1..=1, the peer 5..=7"
        );
        assert_eq!(err.theirs, VersionRange::new(5, 7));
        assert!(negotiate(&hello(1, 3, &[]), &hello(3, 2, &[])).is_err());
    }

    #[test]
    fn capabilities_are_those_both_offer() {
        let ours = hello(1, 1, &["b", "a", "c", "a"]);
        let theirs = hello(1, 1, &["a", "x-future", "b"]);
        assert_eq!(negotiate(&ours, &theirs).unwrap().capabilities, ["b", "a"]);
        assert!(
            negotiate(&ours, &hello(1, 1, &[]))
                .unwrap()
                .capabilities
                .is_empty()
        );
    }
}
