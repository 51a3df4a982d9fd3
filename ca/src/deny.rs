//! The deny list: certificates (by serial) and identities (by SPIFFE ID)
//! that must no longer be accepted even though their chains still verify.
//!
//! SVIDs live for hours, so revocation is a short list shipped next to the
//! trust bundle rather than CRLs or OCSP: every gateway holds the whole list,
//! checks it in each handshake and cuts open tunnels it names. The file is
//! plain text so that an operator can read and diff it:
//!
//! ```text
//! # strait deny list
//! id spiffe://example.org/region/eu-west/gateway/gw-3
//! serial 5c:0f:2a:...   (colons and case do not matter)
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::{CaError, SpiffeId};

/// File name of the deny list, in a CA directory and next to a gateway's
/// bundle.
pub const DENY_FILE: &str = "deny.txt";

/// Serials and SPIFFE IDs that are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    /// Lower-case hex without separators.
    serials: BTreeSet<String>,
    ids: BTreeSet<String>,
}

/// One entry of a deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyEntry {
    Serial(String),
    Id(SpiffeId),
}

impl std::fmt::Display for DenyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyEntry::Serial(s) => write!(f, "serial {s}"),
            DenyEntry::Id(id) => write!(f, "id {id}"),
        }
    }
}

/// Normalises a serial as printed by `strait cert inspect` or OpenSSL
/// (`5C:0F:...`, `5c0f...`) to lower-case hex without separators.
pub fn normalize_serial(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let hex = hex.trim_start_matches('0');
    let hex = if hex.is_empty() { "0" } else { hex };
    (hex.len() <= 40 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_owned())
}

/// The serial of a DER certificate, normalised.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    normalize_serial(&cert.raw_serial_as_string())
}

impl DenyList {
    /// Reads a deny list; a missing file is an empty list (nothing revoked
    /// yet), anything unparsable an error naming file and line.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DenyList::default()),
            Err(source) => Err(CaError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text form; `path` names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CaError> {
        let mut list = DenyList::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| CaError::DenyList {
                path: path.to_owned(),
                line: n + 1,
                reason,
            };
            let (kind, value) = line.split_once(char::is_whitespace).ok_or_else(|| {
                bad(format!(
                    "expected `id <spiffe-id>` or `serial <hex>`, found {line:?}"
                ))
            })?;
            let entry = match kind {
                "serial" => DenyEntry::Serial(
                    normalize_serial(value.trim())
                        .ok_or_else(|| bad(format!("{:?} is not a hex serial", value.trim())))?,
                ),
                "id" => DenyEntry::Id(SpiffeId::parse(value.trim()).map_err(|rule| {
                    bad(format!("{:?} is not a SPIFFE ID: {rule}", value.trim()))
                })?),
                other => {
                    return Err(bad(format!(
                        "unknown entry kind {other:?} (expected `id` or `serial`)"
                    )));
                }
            };
            list.insert(entry);
        }
        Ok(list)
    }

    /// Adds an entry; false when it was already there.
    pub fn insert(&mut self, entry: DenyEntry) -> bool {
        match entry {
            DenyEntry::Serial(s) => self.serials.insert(s),
            DenyEntry::Id(id) => self.ids.insert(id.to_string()),
        }
    }

    /// Adds every entry of `other`.
    pub fn extend(&mut self, other: &DenyList) {
        self.serials.extend(other.serials.iter().cloned());
        self.ids.extend(other.ids.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.serials.is_empty() && self.ids.is_empty()
    }

    pub fn len(&self) -> usize {
        self.serials.len() + self.ids.len()
    }

    /// The entry that refuses a certificate with this ID and serial, if any.
    pub fn denies(&self, id: &SpiffeId, serial: Option<&str>) -> Option<DenyEntry> {
        if self.ids.contains(&id.to_string()) {
            return Some(DenyEntry::Id(id.clone()));
        }
        let serial = serial?;
        self.serials
            .contains(serial)
            .then(|| DenyEntry::Serial(serial.to_owned()))
    }

    /// The entry that refuses this DER leaf certificate, if any.
    pub fn denies_certificate(&self, id: &SpiffeId, leaf: &[u8]) -> Option<DenyEntry> {
        self.denies(id, certificate_serial(leaf).as_deref())
    }

    /// The text form, stable (sorted) so that unchanged lists compare equal
    /// on disk.
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("# strait deny list: one `id <spiffe-id>` or `serial <hex>` per line\n");
        for id in &self.ids {
            let _ = writeln!(out, "id {id}");
        }
        for s in &self.serials {
            let _ = writeln!(out, "serial {s}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_normalises_serials() {
        let text = "# comment\n\nid spiffe://example.org/region/a/gateway/g1\nserial 0A:bC:01  # trailing\n";
        let list = DenyList::parse(Path::new("deny.txt"), text).unwrap();
        assert_eq!(list.len(), 2);
        let id = SpiffeId::parse("spiffe://example.org/region/a/gateway/g1").unwrap();
        assert_eq!(list.denies(&id, None), Some(DenyEntry::Id(id.clone())));
        let other = SpiffeId::parse("spiffe://example.org/region/a/gateway/g2").unwrap();
        assert_eq!(
            list.denies(&other, Some("abc01")),
            Some(DenyEntry::Serial("abc01".into()))
        );
        assert_eq!(list.denies(&other, Some("abc02")), None);
        let again = DenyList::parse(Path::new("x"), &list.to_text()).unwrap();
        assert_eq!(again, list);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = DenyList::parse(Path::new("deny.txt"), "id spiffe://a.org/x\nserial zz\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "deny.txt:2: \"zz\" is not a hex serial");
        let e = DenyList::parse(Path::new("deny.txt"), "name gw-1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("deny.txt:1: unknown entry kind \"name\""),
            "{e}"
        );
        let e = DenyList::parse(Path::new("deny.txt"), "id http://x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("deny.txt:1: \"http://x\" is not a SPIFFE ID"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            DenyList::load(&dir.path().join(DENY_FILE))
                .unwrap()
                .is_empty()
        );
    }
}
