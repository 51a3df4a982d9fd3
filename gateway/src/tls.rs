//! Identity and QUIC configuration: who this gateway is, whom it accepts,
//! and the transport settings of its tunnels. Who a peer is gets decided by
//! `strait-ca`'s verifier; this module only wires it into quinn.

use std::sync::Arc;
use std::time::SystemTime;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use strait_ca::tls::SvidVerifier;
use strait_ca::{
    DenyList, Federation, Identity, IdentityKind, PeerRequirement, SpiffeId, TrustBundle,
    TrustDomain,
};

use crate::GatewayError;
use crate::config::{Congestion, FederationConfig, IdentityPaths, TunnelSettings};

/// This gateway's certificate, key and trust bundle, checked to belong
/// together.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub identity: Identity,
    pub bundle: TrustBundle,
    /// Peers refused even though their chains verify.
    pub deny: DenyList,
    /// Other trust domains whose gateways are accepted.
    pub federation: Federation,
}

impl TlsIdentity {
    pub fn load(paths: &IdentityPaths) -> Result<Self, GatewayError> {
        let identity = Identity::load(&paths.cert, &paths.key)?;
        let bundle = TrustBundle::load(&paths.bundle)?;
        let deny = DenyList::load(&paths.deny)?;
        // Our own chain must verify against our bundle, or no peer will
        // accept us either: say so now, not at the first handshake.
        let requirement = PeerRequirement::AnyInTrustDomain(identity.id.trust_domain().clone());
        strait_ca::verify_chain(
            &identity.chain,
            &bundle,
            &requirement,
            strait_ca::PeerRole::Server,
            SystemTime::now(),
        )
        .map_err(|reason| strait_ca::CaError::Verify {
            context: format!(
                "{} against {}",
                paths.cert.display(),
                paths.bundle.display()
            ),
            reason,
        })?;
        Ok(TlsIdentity {
            identity,
            bundle,
            deny,
            federation: Federation::default(),
        })
    }

    /// Loads the bundles of the federated trust domains (PEM or SPIFFE
    /// bundle documents) and accepts their gateways from now on.
    pub fn with_federation(mut self, sources: &[FederationConfig]) -> Result<Self, GatewayError> {
        let mut federation = Federation::default();
        for source in sources {
            let td = TrustDomain::parse(&source.trust_domain)?;
            if &td == self.trust_domain() {
                return Err(GatewayError::FederatesItself {
                    trust_domain: td.to_string(),
                });
            }
            federation.insert(td, TrustBundle::load(&source.bundle)?);
        }
        self.federation = federation;
        Ok(self)
    }

    /// Whether gateways of `td` may hold tunnels to this one: ours, or
    /// federated.
    pub fn accepts_trust_domain(&self, td: &TrustDomain) -> bool {
        td == self.trust_domain() || self.federation.contains(td)
    }

    /// The key file's mode when its group or others may read it (a key
    /// copied with `cp`, or a Secret mounted without `defaultMode`).
    pub fn loose_key_mode(paths: &IdentityPaths) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.key).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }

    pub fn id(&self) -> &SpiffeId {
        &self.identity.id
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        self.identity.id.trust_domain()
    }

    /// Checks that the certificate names gateway `name` in `region`.
    pub fn require_gateway(&self, name: &str, region: &str) -> Result<(), GatewayError> {
        match self.gateway_name_region() {
            Some((n, r)) if n == name && r == region => Ok(()),
            _ => Err(GatewayError::IdentityMismatch {
                id: self.id().to_string(),
                name: name.to_owned(),
                region: region.to_owned(),
            }),
        }
    }

    /// The gateway name and region in our SPIFFE ID, if it is a gateway ID.
    pub fn gateway_name_region(&self) -> Option<(String, String)> {
        match self.identity.id.kind() {
            IdentityKind::Gateway { region, name } => Some((name.to_owned(), region.to_owned())),
            _ => None,
        }
    }

    /// Accepts any gateway of our trust domain or a federated one.
    pub fn server_config(
        &self,
        settings: &TunnelSettings,
    ) -> Result<quinn::ServerConfig, GatewayError> {
        let tls = self.rustls_server(strait_core::ALPN)?;
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| GatewayError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport(settings)?);
        Ok(config)
    }

    /// Dials a gateway of `region` (any region when `None`) of our trust
    /// domain.
    pub fn client_config(
        &self,
        region: Option<&str>,
        settings: &TunnelSettings,
    ) -> Result<quinn::ClientConfig, GatewayError> {
        self.client_config_in(None, region, settings)
    }

    /// Dials a gateway of `region` of trust domain `td` (ours when `None`;
    /// otherwise a federated one).
    pub fn client_config_in(
        &self,
        td: Option<&str>,
        region: Option<&str>,
        settings: &TunnelSettings,
    ) -> Result<quinn::ClientConfig, GatewayError> {
        let tls = self.rustls_client(td, region, strait_core::ALPN)?;
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| GatewayError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport(settings)?);
        Ok(config)
    }
}

impl TlsIdentity {
    /// The TLS server side of a tunnel (QUIC's, or the TCP carrier's) with
    /// `alpn`: any gateway of ours or of a federated trust domain.
    pub fn rustls_server(&self, alpn: &[u8]) -> Result<rustls::ServerConfig, GatewayError> {
        let verifier = self.verifier(PeerRequirement::Gateway(self.trust_domain().clone()));
        Ok(strait_ca::tls::server_config(
            &self.identity,
            verifier,
            &[alpn],
        )?)
    }

    /// Who a peer must be, with our bundle, deny list and federation.
    fn verifier(&self, requirement: PeerRequirement) -> Arc<SvidVerifier> {
        Arc::new(
            SvidVerifier::new(self.bundle.clone(), requirement)
                .with_deny_list(self.deny.clone())
                .with_federation(self.federation.clone()),
        )
    }

    /// The TLS client side of a tunnel to a gateway of `region` (any when
    /// `None`) of trust domain `td` (ours when `None`), with `alpn`.
    pub fn rustls_client(
        &self,
        td: Option<&str>,
        region: Option<&str>,
        alpn: &[u8],
    ) -> Result<rustls::ClientConfig, GatewayError> {
        let td = match td {
            Some(td) => TrustDomain::parse(td)?,
            None => self.trust_domain().clone(),
        };
        let requirement = match region {
            Some(r) => PeerRequirement::GatewayInRegion(td, r.to_owned()),
            None => PeerRequirement::Gateway(td),
        };
        Ok(strait_ca::tls::client_config(
            &self.identity,
            self.verifier(requirement),
            &[alpn],
        )?)
    }
}

/// The largest UDP payload path MTU discovery tries. On a 1500-byte path it
/// settles where quinn's default (1452) would; where the path carries more
/// (jumbo frames, loopback) fewer packets carry the same bytes, and the
/// per-packet cost dominates QUIC's CPU per byte. Ten segments of this size
/// still fit one 64 KiB GSO send (quinn batches up to ten).
pub(crate) const MTU_PROBE_CEILING: u16 = 6_000;

/// Transport settings for cross-region tunnels: windows sized for the
/// bandwidth-delay product, keep-alive and a short idle timeout so dead
/// peers are noticed.
fn transport(s: &TunnelSettings) -> Result<Arc<TransportConfig>, GatewayError> {
    let var = |v: u64| VarInt::from_u64(v).map_err(|e| GatewayError::Quic(e.to_string()));
    let mut t = TransportConfig::default();
    t.stream_receive_window(var(s.stream_window)?);
    t.receive_window(var(s.connection_window)?);
    t.send_window(s.connection_window);
    t.max_concurrent_bidi_streams(VarInt::from_u32(s.max_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.keep_alive_interval(Some(s.keep_alive));
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(s.idle_timeout).map_err(|e| GatewayError::Quic(e.to_string()))?,
    ));
    t.datagram_receive_buffer_size(Some(64 * 1024));
    t.datagram_send_buffer_size(64 * 1024);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_PROBE_CEILING);
    t.mtu_discovery_config(Some(mtu));
    if s.congestion == Congestion::Bbr {
        t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    Ok(Arc::new(t))
}

/// The leaf certificate a QUIC connection's peer presented.
pub fn peer_leaf(conn: &quinn::Connection) -> Option<rustls::pki_types::CertificateDer<'static>> {
    strait_ca::tls::peer_chain(conn.peer_identity()?)?
        .into_iter()
        .next()
}

/// The SPIFFE ID of a QUIC connection's peer (already verified in the
/// handshake).
pub fn peer_id(conn: &quinn::Connection) -> Option<SpiffeId> {
    SpiffeId::from_certificate(peer_leaf(conn)?.as_ref()).ok()
}
