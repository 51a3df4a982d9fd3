//! Export policy, sans-IO: which peer gateways (and origin workloads) may
//! open an exported service. The caller parses the peer's SPIFFE ID (the
//! handshake already did) and passes its parts, so the default rule is a
//! comparison of trust domains, not a string prefix.

use wildmatch::WildMatch;

use crate::frame::StatusCode;

/// Who is asking, as the handshake established it.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The peer gateway's SPIFFE ID, whole.
    pub id: &'a str,
    /// Its trust domain, parsed from the ID.
    pub trust_domain: &'a str,
    /// Whether the ID is a gateway identity.
    pub is_gateway: bool,
    /// The client workload's SPIFFE ID, when the import had one.
    pub origin: Option<&'a str>,
}

/// Who may open one exported service.
#[derive(Debug)]
pub struct ExportPolicy {
    trust_domain: String,
    allow: Vec<WildMatch>,
    /// `allow` as written.
    patterns: Vec<String>,
    allow_workloads: Vec<WildMatch>,
}

impl ExportPolicy {
    /// `allow` empty: any gateway of `trust_domain`; a gateway of another
    /// (federated) trust domain only through a pattern that starts with
    /// `spiffe://<its trust domain>/`. `allow_workloads` empty: any origin
    /// (or none).
    pub fn new(trust_domain: &str, allow: &[String], allow_workloads: &[String]) -> Self {
        ExportPolicy {
            trust_domain: trust_domain.to_owned(),
            allow: allow.iter().map(|p| WildMatch::new(p)).collect(),
            patterns: allow.to_vec(),
            allow_workloads: allow_workloads.iter().map(|p| WildMatch::new(p)).collect(),
        }
    }

    pub fn decide(&self, who: Requester<'_>) -> Result<(), StatusCode> {
        let gateway_ok = if who.trust_domain != self.trust_domain {
            // A federated partner only where a pattern names its trust
            // domain: `*` written for our own gateways does not admit it.
            let prefix = format!("spiffe://{}/", who.trust_domain);
            self.allow
                .iter()
                .zip(&self.patterns)
                .any(|(p, text)| text.starts_with(&prefix) && p.matches(who.id))
        } else if self.allow.is_empty() {
            who.is_gateway
        } else {
            self.allow.iter().any(|p| p.matches(who.id))
        };
        // Origin workloads, when the export names them, must be known and
        // match: the importing gateway vouches for them with workload mTLS.
        let origin_ok = self.allow_workloads.is_empty()
            || who
                .origin
                .is_some_and(|o| self.allow_workloads.iter().any(|p| p.matches(o)));
        if gateway_ok && origin_ok {
            Ok(())
        } else {
            Err(StatusCode::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw<'a>(id: &'a str, td: &'a str) -> Requester<'a> {
        Requester {
            id,
            trust_domain: td,
            is_gateway: true,
            origin: None,
        }
    }

    #[test]
    fn default_is_any_gateway_of_the_trust_domain() {
        let p = ExportPolicy::new("example.org", &[], &[]);
        assert!(
            p.decide(gw("spiffe://example.org/region/a/gateway/x", "example.org"))
                .is_ok()
        );
        // A prefix look-alike of another trust domain is not ours.
        let look_alike = "spiffe://example.org.evil/region/a/gateway/x";
        assert_eq!(
            p.decide(gw(look_alike, "example.org.evil")),
            Err(StatusCode::Forbidden)
        );
        let workload = Requester {
            is_gateway: false,
            ..gw("spiffe://example.org/ns/a/sa/b", "example.org")
        };
        assert_eq!(p.decide(workload), Err(StatusCode::Forbidden));
    }

    #[test]
    fn patterns_and_origins() {
        let p = ExportPolicy::new(
            "example.org",
            &["spiffe://example.org/region/us-east/gateway/*".into()],
            &["spiffe://example.org/ns/shop/sa/*".into()],
        );
        let east = "spiffe://example.org/region/us-east/gateway/gw-2";
        assert_eq!(
            p.decide(gw(east, "example.org")),
            Err(StatusCode::Forbidden),
            "no origin"
        );
        let with = Requester {
            origin: Some("spiffe://example.org/ns/shop/sa/web"),
            ..gw(east, "example.org")
        };
        assert!(p.decide(with).is_ok());
        let west = Requester {
            id: "spiffe://example.org/region/eu-west/gateway/gw-1",
            ..with
        };
        assert_eq!(p.decide(west), Err(StatusCode::Forbidden));
    }

    #[test]
    fn a_partner_needs_a_pattern_that_names_its_trust_domain() {
        let partner = gw("spiffe://partner.org/region/a/gateway/x", "partner.org");
        let default = ExportPolicy::new("example.org", &[], &[]);
        assert_eq!(default.decide(partner), Err(StatusCode::Forbidden));
        let anyone = ExportPolicy::new("example.org", &["*".into()], &[]);
        assert_eq!(anyone.decide(partner), Err(StatusCode::Forbidden));
        assert!(
            anyone
                .decide(gw("spiffe://example.org/region/a/gateway/x", "example.org"))
                .is_ok()
        );
        let named = ExportPolicy::new("example.org", &["spiffe://partner.org/*".into()], &[]);
        assert!(named.decide(partner).is_ok());
        let other = gw("spiffe://other.org/region/a/gateway/x", "other.org");
        assert_eq!(named.decide(other), Err(StatusCode::Forbidden));
    }
}
