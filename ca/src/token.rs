//! Join tokens: how a new gateway earns its first certificate.
//!
//! A token is a bearer secret with a policy: the region it may join, a
//! pattern its name must match, an expiry and a use count. The CA keeps only
//! the SHA-256 of the secret (one JSON record per token under `tokens/` in
//! the CA directory), so a copy of the CA directory's token records does not
//! let anyone join. The printed token also carries what the joining side
//! needs before it trusts anything: the CA service's address and the
//! fingerprint of the root that anchors the service's certificate, so the
//! secret is only ever sent to that CA (the same idea as Skupper's tokens
//! and kubeadm's `--discovery-token-ca-cert-hash`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CaError, SpiffeId, TrustDomain};

/// Directory of token records inside a CA directory.
pub const TOKENS_DIR: &str = "tokens";
/// File in a CA directory where `strait ca serve` records the address
/// tokens should point joining gateways at.
pub const SERVICE_ADDRESS_FILE: &str = "service-address";

const PREFIX: &str = "strait-join-v1.";

/// What a token printed by `strait token create` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Public id: names the record, appears in logs.
    pub id: String,
    /// The bearer secret (hex).
    pub secret: String,
    /// Where the CA service listens, `host:port`.
    pub ca: Vec<String>,
    /// SHA-256 of the root certificate (DER) that the CA service's chain
    /// must end in, lower-case hex.
    pub root_sha256: String,
    pub trust_domain: String,
    /// The region the token is for (the CA's record decides; this is for
    /// the joining side's defaults and messages).
    pub region: String,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token always serialises");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<Self, TokenRefusal> {
        let text = text.trim();
        let body = text.strip_prefix(PREFIX).ok_or_else(|| {
            TokenRefusal::Malformed(format!("a join token starts with {PREFIX:?}"))
        })?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenRefusal::Malformed(format!("not base64url: {e}")))?;
        let token: JoinToken = serde_json::from_slice(&json)
            .map_err(|e| TokenRefusal::Malformed(format!("unreadable contents: {e}")))?;
        if token.ca.is_empty() {
            return Err(TokenRefusal::Malformed("it names no CA address".into()));
        }
        Ok(token)
    }
}

/// What a token allows.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub region: String,
    /// Glob (`*`, `?`) the joining gateway's name must match.
    pub name_pattern: String,
    pub ttl: Duration,
    pub uses: u32,
}

/// A token as the CA stores it: the secret only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub region: String,
    pub name_pattern: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    pub uses_allowed: u32,
    pub uses_left: u32,
}

/// Why a token was not accepted; said to the joining gateway as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("malformed join token: {0}")]
    Malformed(String),
    #[error("unknown join token {id} (never created by this CA, or deleted)")]
    Unknown { id: String },
    #[error("join token {id}: wrong secret")]
    WrongSecret { id: String },
    #[error("join token {id} expired at {}", crate::time::rfc3339(crate::time::from_unix(*expires_at as i64)))]
    Expired { id: String, expires_at: u64 },
    #[error("join token {id} is used up ({uses} of {uses} uses)")]
    UsedUp { id: String, uses: u32 },
    #[error("join token {id} is for region {allowed}, not {asked}")]
    WrongRegion {
        id: String,
        allowed: String,
        asked: String,
    },
    #[error("join token {id} allows gateway names matching {pattern:?}, not {name:?}")]
    NameNotAllowed {
        id: String,
        pattern: String,
        name: String,
    },
    #[error("gateway name {name:?} cannot be part of a SPIFFE ID: {reason}")]
    BadName { name: String, reason: String },
    #[error("join token {id}: the CA's token store failed: {reason}")]
    Store { id: String, reason: String },
}

/// The token records of one CA directory.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a certificate as carried in tokens: lower-case hex.
pub fn root_pin(der: &[u8]) -> String {
    sha256_hex(der)
}

fn random_hex(bytes: usize) -> Result<String, CaError> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| CaError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Constant-time equality of two hex digests.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl TokenStore {
    pub fn new(ca_dir: &Path) -> Self {
        TokenStore {
            dir: ca_dir.join(TOKENS_DIR),
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Creates a token and stores its record.
    pub fn create(
        &self,
        policy: &TokenPolicy,
        ca: Vec<String>,
        root_sha256: String,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<(JoinToken, TokenRecord), CaError> {
        if policy.uses == 0 {
            return Err(CaError::BadTokenPolicy("--uses must be at least 1".into()));
        }
        if policy.ttl.is_zero() {
            return Err(CaError::BadTokenPolicy(
                "--ttl must be greater than zero".into(),
            ));
        }
        gateway_id(trust_domain, &policy.region, "probe").map_err(|reason| {
            CaError::BadTokenPolicy(format!("region {:?}: {reason}", policy.region))
        })?;
        wildmatch::WildMatch::new(&policy.name_pattern);
        crate::files::create_dir(&self.dir)?;
        let token = JoinToken {
            id: random_hex(6)?,
            secret: random_hex(32)?,
            ca,
            root_sha256,
            trust_domain: trust_domain.to_string(),
            region: policy.region.clone(),
        };
        let record = TokenRecord {
            id: token.id.clone(),
            secret_sha256: sha256_hex(token.secret.as_bytes()),
            region: policy.region.clone(),
            name_pattern: policy.name_pattern.clone(),
            created_at: unix(now),
            expires_at: unix(now + policy.ttl),
            uses_allowed: policy.uses,
            uses_left: policy.uses,
        };
        let json = serde_json::to_vec_pretty(&record).expect("a record always serialises");
        crate::files::write(
            &self.record_path(&token.id),
            &json,
            0o600,
            crate::Overwrite::Never,
        )?;
        Ok((token, record))
    }

    /// Every stored record, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord>, CaError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CaError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_record(&path)?);
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Checks a presented token against its record for a gateway `name` in
    /// `region` (the token's region when `None`), without using it up.
    /// Returns the record and the SPIFFE ID to issue.
    pub fn check(
        &self,
        id: &str,
        secret: &str,
        region: Option<&str>,
        name: &str,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<(TokenRecord, SpiffeId), TokenRefusal> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(TokenRefusal::Malformed("bad token id".into()));
        }
        let path = self.record_path(id);
        if !path.exists() {
            return Err(TokenRefusal::Unknown { id: id.to_owned() });
        }
        let record = read_record(&path).map_err(|e| TokenRefusal::Store {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        if !same_digest(&sha256_hex(secret.as_bytes()), &record.secret_sha256) {
            return Err(TokenRefusal::WrongSecret { id: id.to_owned() });
        }
        if unix(now) >= record.expires_at {
            return Err(TokenRefusal::Expired {
                id: id.to_owned(),
                expires_at: record.expires_at,
            });
        }
        if record.uses_left == 0 {
            return Err(TokenRefusal::UsedUp {
                id: id.to_owned(),
                uses: record.uses_allowed,
            });
        }
        let region = region.unwrap_or(&record.region);
        if region != record.region {
            return Err(TokenRefusal::WrongRegion {
                id: id.to_owned(),
                allowed: record.region.clone(),
                asked: region.to_owned(),
            });
        }
        if !wildmatch::WildMatch::new(&record.name_pattern).matches(name) {
            return Err(TokenRefusal::NameNotAllowed {
                id: id.to_owned(),
                pattern: record.name_pattern.clone(),
                name: name.to_owned(),
            });
        }
        let spiffe =
            gateway_id(trust_domain, region, name).map_err(|reason| TokenRefusal::BadName {
                name: name.to_owned(),
                reason,
            })?;
        Ok((record, spiffe))
    }

    /// Uses a token once (after [`TokenStore::check`] and a successful
    /// issue). The caller serialises calls; the record is replaced
    /// atomically.
    pub fn consume(&self, id: &str) -> Result<TokenRecord, CaError> {
        let path = self.record_path(id);
        let mut record = read_record(&path)?;
        record.uses_left = record.uses_left.saturating_sub(1);
        let json = serde_json::to_vec_pretty(&record).expect("a record always serialises");
        crate::files::write(&path, &json, 0o600, crate::Overwrite::Replace)?;
        Ok(record)
    }
}

fn read_record(path: &Path) -> Result<TokenRecord, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| CaError::Pem {
        path: path.to_owned(),
        reason: format!("not a token record: {e}"),
    })
}

/// `spiffe://<td>/region/<region>/gateway/<name>`, with region and name
/// each a single path segment.
pub fn gateway_id(td: &TrustDomain, region: &str, name: &str) -> Result<SpiffeId, String> {
    let id = SpiffeId::gateway(td, region, name).map_err(|e| e.to_string())?;
    match id.kind() {
        crate::IdentityKind::Gateway { region: r, name: n } if r == region && n == name => Ok(id),
        _ => Err("region and name must each be a single path segment".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore, TrustDomain) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        (dir, store, TrustDomain::parse("example.org").unwrap())
    }

    fn policy(uses: u32) -> TokenPolicy {
        TokenPolicy {
            region: "eu-west".into(),
            name_pattern: "gw-*".into(),
            ttl: Duration::from_secs(3600),
            uses,
        }
    }

    #[test]
    fn token_round_trips_and_record_holds_only_a_hash() {
        let (dir, store, td) = store();
        let now = SystemTime::now();
        let (token, record) = store
            .create(
                &policy(1),
                vec!["127.0.0.1:1".into()],
                "ab".repeat(32),
                &td,
                now,
            )
            .unwrap();
        assert_eq!(JoinToken::decode(&token.encode()).unwrap(), token);
        let stored =
            std::fs::read_to_string(dir.path().join("tokens").join(format!("{}.json", token.id)))
                .unwrap();
        assert!(!stored.contains(&token.secret));
        assert!(stored.contains(&record.secret_sha256));
    }

    #[test]
    fn checks_every_rule_and_uses_count_down() {
        let (_dir, store, td) = store();
        let now = SystemTime::now();
        let (t, _) = store
            .create(&policy(2), vec!["a:1".into()], String::new(), &td, now)
            .unwrap();
        let check = |secret: &str, region: Option<&str>, name: &str, at: SystemTime| {
            store.check(&t.id, secret, region, name, &td, at)
        };
        let (_, id) = check(&t.secret, None, "gw-1", now).unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://example.org/region/eu-west/gateway/gw-1"
        );
        assert!(matches!(
            check("00", None, "gw-1", now),
            Err(TokenRefusal::WrongSecret { .. })
        ));
        assert!(matches!(
            check(&t.secret, Some("us-east"), "gw-1", now),
            Err(TokenRefusal::WrongRegion { .. })
        ));
        assert!(matches!(
            check(&t.secret, None, "db-1", now),
            Err(TokenRefusal::NameNotAllowed { .. })
        ));
        assert!(matches!(
            check(&t.secret, None, "gw-1", now + Duration::from_secs(3600)),
            Err(TokenRefusal::Expired { .. })
        ));
        assert!(matches!(
            store.check("0123", &t.secret, None, "gw-1", &td, now),
            Err(TokenRefusal::Unknown { .. })
        ));
        store.consume(&t.id).unwrap();
        check(&t.secret, None, "gw-2", now).unwrap();
        store.consume(&t.id).unwrap();
        let e = check(&t.secret, None, "gw-3", now).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("join token {} is used up (2 of 2 uses)", t.id)
        );
    }

    #[test]
    fn malformed_tokens_say_why() {
        assert!(
            JoinToken::decode("hello")
                .unwrap_err()
                .to_string()
                .contains("starts with")
        );
        assert!(
            JoinToken::decode("strait-join-v1.!!!")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }
}
