//! strait-ca: the certificate authority of a strait mesh, and the one place
//! that decides who a peer is.
//!
//! It creates and loads CAs (a root, optionally an intermediate), issues
//! SPIFFE X.509-SVIDs with keys it makes or from CSRs, reads trust bundles,
//! parses SPIFFE IDs and verifies presented chains ([`verify_chain`]), also
//! as rustls verifiers ([`tls::SvidVerifier`]). It reads externally issued
//! SPIFFE certificates the same way as its own.
//!
//! It never touches the network and never reads the clock: every function
//! that depends on time takes `now`.

#![forbid(unsafe_code)]

mod authority;
mod bundle;
mod deny;
mod error;
pub mod federation;
pub mod files;
mod identity;
mod inspect;
mod issue;
mod key;
pub mod signed_deny;
mod spiffe;
pub mod time;
pub mod tls;
mod token;
mod verify;

pub use authority::{
    CA_BUNDLE, CaFiles, CaOptions, CertificateAuthority, DEFAULT_CA_VALIDITY, INTERMEDIATE_CERT,
    INTERMEDIATE_KEY, REGION_URN_PREFIX, ROOT_CERT, ROOT_KEY, ca_region,
};
pub use bundle::{TrustBundle, fingerprint};
pub use deny::{DENY_FILE, DenyEntry, DenyList, certificate_serial, normalize_serial};
pub use error::{CaError, VerifyError};
pub use federation::Federation;
pub use files::Overwrite;
pub use identity::{Identity, IdentityPaths};
pub use inspect::{CertificateInfo, describe, inspect_file};
pub use issue::{
    BUNDLE_FILE, CERT_FILE, CSR_FILE, DEFAULT_SVID_TTL, IssuedSvid, KEY_FILE, SvidRequest,
    generate_csr,
};
pub use key::KeyType;
pub use spiffe::{IdentityKind, SpiffeId, SpiffeIdError, TrustDomain};
pub use token::{
    JoinToken, SERVICE_ADDRESS_FILE, TOKENS_DIR, TokenPolicy, TokenRecord, TokenRefusal,
    TokenStore, gateway_id, root_pin,
};
pub use verify::{PeerRequirement, PeerRole, check_leaf, verify_chain};
