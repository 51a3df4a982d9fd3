//! SPIFFE IDs and trust domains, parsed once by the rules of the SPIFFE-ID
//! standard so that nothing downstream handles an unchecked string.

use std::fmt;
use std::str::FromStr;

use crate::CaError;

const SCHEME: &str = "spiffe://";
/// The SPIFFE-ID standard caps a whole ID at 2048 bytes.
pub const MAX_ID_LEN: usize = 2048;
/// A trust domain is a DNS-like name of at most 255 bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// The rule of the SPIFFE-ID standard that a string breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("the scheme must be \"spiffe://\" (lower case)")]
    WrongScheme,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain may hold only a-z, 0-9, '.', '-' and '_', found {0:?}")]
    TrustDomainChar(char),
    #[error("the trust domain must not carry a port")]
    Port,
    #[error("the ID must not carry user info ('@')")]
    UserInfo,
    #[error("the ID must not carry a query ('?')")]
    Query,
    #[error("the ID must not carry a fragment ('#')")]
    Fragment,
    #[error("a path segment is empty (\"//\" or a trailing '/')")]
    EmptySegment,
    #[error("a path segment is '.' or '..'")]
    DotSegment,
    #[error("a path segment may hold only A-Z, a-z, 0-9, '.', '-' and '_', found {0:?}")]
    PathChar(char),
    #[error("the ID is {0} bytes long, more than the 2048 allowed")]
    TooLong(usize),
    #[error("the trust domain is {0} bytes long, more than the 255 allowed")]
    TrustDomainTooLong(usize),
}

/// A validated SPIFFE trust domain, such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a trust domain ID
    /// (`spiffe://example.org`).
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let bare = s.strip_prefix(SCHEME).unwrap_or(s);
        check_trust_domain(bare)
            .map(|()| TrustDomain(bare.to_owned()))
            .map_err(|rule| CaError::InvalidTrustDomain {
                domain: s.to_owned(),
                rule,
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<td>`, which strait puts on CA
    /// certificates.
    pub fn id(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg/seg...`.
    path: String,
}

/// What a SPIFFE ID names, by strait's path conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind<'a> {
    /// `/region/<region>/gateway/<name>`
    Gateway { region: &'a str, name: &'a str },
    /// `/ns/<namespace>/sa/<service-account>`
    Workload {
        namespace: &'a str,
        service_account: &'a str,
    },
    /// Any other path.
    Other,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    ///
    /// ```
    /// use strait_ca::SpiffeId;
    /// let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/web").unwrap();
    /// assert_eq!(id.trust_domain().as_str(), "example.org");
    /// assert!(SpiffeId::parse("spiffe://example.org:443/x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, CaError> {
        parse_id(s).map_err(|rule| CaError::InvalidSpiffeId {
            id: s.to_owned(),
            rule,
        })
    }

    /// Builds `spiffe://<td>/region/<region>/gateway/<name>`.
    pub fn gateway(td: &TrustDomain, region: &str, name: &str) -> Result<Self, CaError> {
        Self::parse(&format!("{SCHEME}{td}/region/{region}/gateway/{name}"))
    }

    /// Builds `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub fn workload(td: &TrustDomain, namespace: &str, sa: &str) -> Result<Self, CaError> {
        Self::parse(&format!("{SCHEME}{td}/ns/{namespace}/sa/{sa}"))
    }

    /// Reads the SPIFFE ID out of a DER X.509-SVID (exactly one URI SAN
    /// holding a valid ID). Says nothing about the chain or validity: that is
    /// [`crate::verify_chain`]'s job.
    pub fn from_certificate(der: &[u8]) -> Result<Self, crate::VerifyError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| crate::VerifyError::Malformed(e.to_string()))?;
        crate::verify::svid_id(&cert)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn kind(&self) -> IdentityKind<'_> {
        let segs: Vec<&str> = self.path.split('/').skip(1).collect();
        match segs.as_slice() {
            ["region", region, "gateway", name] => IdentityKind::Gateway { region, name },
            ["ns", namespace, "sa", service_account] => IdentityKind::Workload {
                namespace,
                service_account,
            },
            _ => IdentityKind::Other,
        }
    }

    /// The last path segment, or the trust domain for a path-less ID; a
    /// readable short name for certificate subjects and logs.
    pub fn short_name(&self) -> &str {
        self.path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(self.trust_domain.as_str())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, CaError> {
        Self::parse(s)
    }
}

/// Parses by the SPIFFE-ID rules; the error names the rule broken.
pub(crate) fn parse_id(s: &str) -> Result<SpiffeId, SpiffeIdError> {
    if s.len() > MAX_ID_LEN {
        return Err(SpiffeIdError::TooLong(s.len()));
    }
    let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
    if rest.contains('?') {
        return Err(SpiffeIdError::Query);
    }
    if rest.contains('#') {
        return Err(SpiffeIdError::Fragment);
    }
    let (td, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    check_trust_domain(td)?;
    if !path.is_empty() {
        for seg in path[1..].split('/') {
            match seg {
                "" => return Err(SpiffeIdError::EmptySegment),
                "." | ".." => return Err(SpiffeIdError::DotSegment),
                _ => {}
            }
            if let Some(c) = seg
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
            {
                return Err(SpiffeIdError::PathChar(c));
            }
        }
    }
    Ok(SpiffeId {
        trust_domain: TrustDomain(td.to_owned()),
        path: path.to_owned(),
    })
}

fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(td.len()));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(SpiffeIdError::TrustDomainChar(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> SpiffeIdError {
        parse_id(s).unwrap_err()
    }

    #[test]
    fn accepts_valid_ids() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/region/eu-west/gateway/gw-1",
            "spiffe://ex_ample-1.org/ns/shop/sa/web",
            "spiffe://a/B.c-d_e/0",
        ] {
            let id = parse_id(s).unwrap();
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn names_the_broken_rule() {
        assert_eq!(rule("http://example.org/x"), SpiffeIdError::WrongScheme);
        assert_eq!(rule("SPIFFE://example.org/x"), SpiffeIdError::WrongScheme);
        assert_eq!(rule("spiffe:///x"), SpiffeIdError::EmptyTrustDomain);
        assert_eq!(
            rule("spiffe://Example.org/x"),
            SpiffeIdError::TrustDomainChar('E')
        );
        assert_eq!(rule("spiffe://example.org:8443/x"), SpiffeIdError::Port);
        assert_eq!(rule("spiffe://user@example.org/x"), SpiffeIdError::UserInfo);
        assert_eq!(rule("spiffe://example.org/x?y=1"), SpiffeIdError::Query);
        assert_eq!(rule("spiffe://example.org/x#frag"), SpiffeIdError::Fragment);
        assert_eq!(
            rule("spiffe://example.org/a//b"),
            SpiffeIdError::EmptySegment
        );
        assert_eq!(rule("spiffe://example.org/a/"), SpiffeIdError::EmptySegment);
        assert_eq!(
            rule("spiffe://example.org/a/../b"),
            SpiffeIdError::DotSegment
        );
        assert_eq!(
            rule("spiffe://example.org/a/./b"),
            SpiffeIdError::DotSegment
        );
        assert_eq!(
            rule("spiffe://example.org/a b"),
            SpiffeIdError::PathChar(' ')
        );
        assert_eq!(
            rule("spiffe://example.org/a%20b"),
            SpiffeIdError::PathChar('%')
        );
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(rule(&long), SpiffeIdError::TooLong(long.len()));
        let long_td = format!("spiffe://{}", "a".repeat(256));
        assert_eq!(rule(&long_td), SpiffeIdError::TrustDomainTooLong(256));
    }

    #[test]
    fn reads_kind() {
        let td = TrustDomain::parse("example.org").unwrap();
        let gw = SpiffeId::gateway(&td, "eu-west", "gw-1").unwrap();
        assert_eq!(
            gw.kind(),
            IdentityKind::Gateway {
                region: "eu-west",
                name: "gw-1"
            }
        );
        let wl = SpiffeId::workload(&td, "shop", "web").unwrap();
        assert_eq!(
            wl.kind(),
            IdentityKind::Workload {
                namespace: "shop",
                service_account: "web"
            }
        );
        assert_eq!(wl.short_name(), "web");
        assert_eq!(
            parse_id("spiffe://example.org/x").unwrap().kind(),
            IdentityKind::Other
        );
        assert!(SpiffeId::gateway(&td, "eu west", "gw").is_err());
    }

    #[test]
    fn trust_domain_accepts_both_forms() {
        assert_eq!(
            TrustDomain::parse("spiffe://example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().id(),
            "spiffe://example.org"
        );
        assert!(TrustDomain::parse("example.org/path").is_err());
    }
}
