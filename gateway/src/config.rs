//! The gateway's TOML configuration, validated once into typed values.
//! Every error names the file, the line and the key. Relative paths are
//! relative to the file.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use strait_core::health::ProbeConfig;

use crate::GatewayError;
pub use crate::admission::Limits;
pub use strait_ca::IdentityPaths;

/// Default QUIC port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:15443";
/// Streams an import carries at once unless it says `max_concurrent`: a
/// flood of idle clients is refused before it exhausts the gateway's memory
/// (about 6-7 KiB an idle stream, 13-26 KiB once bytes moved; see
/// bench/README.md).
pub const DEFAULT_IMPORT_MAX_CONCURRENT: usize = 10_000;
/// Streams one client address may hold at once on an import unless it says
/// `max_per_client`: a fifth of the default limit, so one flooding client
/// cannot take every slot from the others.
pub const DEFAULT_IMPORT_MAX_PER_CLIENT: usize = 2_000;
/// Default admin port.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Empty when the file leaves it out: then the certificate names the
    /// gateway (one config for every node of a DaemonSet); see
    /// [`GatewayConfig::take_name_from`].
    pub name: String,
    pub region: String,
    pub listen: SocketAddr,
    /// Where peers should dial this gateway (`host:port`), when the file
    /// says; see [`GatewayConfig::advertise_address`] for the fallbacks.
    pub advertise: Option<String>,
    pub admin: SocketAddr,
    /// Carry streams on for gateways of other regions whose direct path is
    /// cut (`[gateway] relay`, default true).
    pub relay: bool,
    pub identity: IdentityPaths,
    /// Other trust domains whose gateways may tunnel to this one
    /// (`[[federation]]`).
    pub federation: Vec<FederationConfig>,
    /// Renew the certificate through a CA service, when set.
    pub renewal: Option<RenewalConfig>,
    pub peers: Vec<PeerConfig>,
    pub exports: Vec<ExportConfig>,
    pub imports: Vec<ImportConfig>,
    pub tunnel: TunnelSettings,
    pub health: ProbeConfig,
    /// How often exported targets are checked (TCP connect).
    pub target_check: Duration,
    /// How long a tunnel that came up or back waits before taking traffic
    /// from established ones (failback hold-down).
    pub hold_down: Duration,
    /// How long a draining gateway lets active streams finish.
    pub drain_grace: Duration,
}

/// Default for how often a gateway with a CA service fetches the bundle and
/// deny list.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// Automatic renewal through a CA service (`strait ca serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalConfig {
    /// `host:port` of the CA service.
    pub ca_service: String,
    /// How often the bundle and deny list are fetched.
    pub refresh: Duration,
}

/// A federated trust domain: its gateways may tunnel to ours, verified
/// against its own bundle (PEM or a SPIFFE bundle document, reloaded when
/// the file changes), and open only the exports whose `allow` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    pub trust_domain: String,
    pub bundle: PathBuf,
}

/// Seeds of another region: every address a name resolves to is dialed
/// (re-resolved every 30 s); the rest of the region's gateways are learned
/// from them.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The region the peer's SPIFFE ID must name (any, when `None`).
    pub region: Option<String>,
    /// The trust domain the peer's SPIFFE ID must name, when not ours: one
    /// of the `[[federation]]` trust domains.
    pub trust_domain: Option<String>,
    /// `host:port`; names are resolved at dial time.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub service: String,
    /// `host:port`, resolved when a stream dials it.
    pub target: String,
    /// SPIFFE ID patterns (`*` matches any run of characters) of peers
    /// allowed to open this service. Empty: any gateway of the trust domain.
    pub allow: Vec<String>,
    /// SPIFFE ID patterns of origin workloads allowed; empty: any origin,
    /// or none. When set, a stream without a matching origin is FORBIDDEN.
    pub allow_workloads: Vec<String>,
    pub limits: Limits,
    /// Accept streams relayed by a gateway of a third region (the direct
    /// path from the origin is cut). Default true; `allow` then judges
    /// the gateway the stream entered the mesh at.
    pub accept_relayed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportConfig {
    pub service: String,
    pub listen: SocketAddr,
    /// Regions in order of preference; empty: own region first, then any.
    pub prefer: Vec<String>,
    pub limits: Limits,
    /// Clients must present an X.509-SVID of the trust domain; its SPIFFE
    /// ID travels in OPEN as the origin.
    pub mtls: bool,
    /// A request may be delivered twice without harm, so a stream whose
    /// peer may have forwarded it can still be replayed on another peer.
    /// Default false: only proof of non-delivery allows a replay.
    pub idempotent: bool,
    /// A target in this gateway's own region (`host:port`), used first
    /// while its health check passes; the remote regions are the failover.
    pub local: Option<String>,
}

/// QUIC transport settings, sized for cross-region links.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// Per-stream receive window; 100 ms x 1 Gbit/s needs 12.5 MB.
    pub stream_window: u64,
    /// Whole-connection receive and send window at the start; they grow
    /// with the measured bandwidth-delay product up to `window_budget`.
    pub connection_window: u64,
    /// Most a connection's receive or send window may grow to.
    pub window_budget: u64,
    /// Streams at once on one QUIC connection (each lane of each peer):
    /// what the peer may open towards us, and what we ask of it.
    pub max_streams: u32,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// Requested UDP socket buffer size (the kernel may grant less).
    pub udp_buffer: usize,
    /// Time allowed to dial an export's target.
    pub connect_timeout: Duration,
    /// Time allowed for the OPEN frame of a new stream to arrive.
    pub open_timeout: Duration,
    /// A stream with no bytes either way for this long is reset.
    pub stream_idle_timeout: Duration,
    /// A client connection to an import on which no byte moved either way
    /// for this long is reset (idle clients must not hold a gateway's
    /// memory; a server that speaks first moves a byte and is not cut).
    pub first_byte_timeout: Duration,
    /// Redial backoff: first delay and cap.
    pub redial_min: Duration,
    pub redial_max: Duration,
    pub congestion: Congestion,
    /// Distinct gateways of each remote region to keep a tunnel to.
    pub tunnels_per_region: usize,
    /// QUIC connections ("lanes") to keep to each peer gateway that offers
    /// them, so one busy connection cannot hold the gateway to one core:
    /// each connection is driven by one task at a time.
    pub connections_per_peer: u16,
    /// Learn gateways from the mesh and dial them; false dials only the
    /// `[[peer]]` seeds (a static topology, or advertised addresses that
    /// other regions cannot reach).
    pub discover: bool,
    /// Handshakes in flight above which a new one must first prove its
    /// source address with a QUIC Retry (0: always), and at which new ones
    /// are refused: a flood of strangers' handshakes cannot take the CPU
    /// that established tunnels need.
    pub handshake_retry_above: usize,
    pub max_handshakes: usize,
    /// Failed handshakes from one address within 10 s after which it is
    /// refused for 10 s without handshake work (0: never).
    pub handshake_strikes: u32,
    /// How tunnels are dialed: QUIC over UDP, falling back to the TCP
    /// carrier when a peer does not answer over UDP (auto, the default).
    pub transport: Transport,
}

/// How a gateway dials its tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC over UDP; over the TCP carrier (TLS over TCP to the peer's
    /// tunnel port) when a peer gives no QUIC answer within a few seconds,
    /// trying UDP again in the background and moving back when it works.
    Auto,
    /// QUIC over UDP only.
    Quic,
    /// Always over the TCP carrier.
    Tcp,
}

/// QUIC congestion controller. BBR is the default: through netsim at 80 ms
/// RTT with 1% random loss it moved 100 MiB at 281 Mbit/s where CUBIC
/// managed 2 Mbit/s; on clean loopback the two were within noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    Cubic,
    Bbr,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            stream_window: 16 << 20,
            connection_window: 64 << 20,
            window_budget: 256 << 20,
            max_streams: 16_384,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            udp_buffer: 8 << 20,
            connect_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(3600),
            first_byte_timeout: Duration::from_secs(30),
            redial_min: Duration::from_millis(200),
            redial_max: Duration::from_secs(10),
            congestion: Congestion::Bbr,
            transport: Transport::Auto,
            tunnels_per_region: 2,
            connections_per_peer: default_connections_per_peer(),
            discover: true,
            handshake_retry_above: strait_core::handshake::GateConfig::default().retry_above,
            max_handshakes: strait_core::handshake::GateConfig::default().max_in_flight,
            handshake_strikes: strait_core::handshake::GateConfig::default().strikes,
        }
    }
}

/// The most connections per peer a gateway dials or accepts.
pub const MAX_CONNECTIONS_PER_PEER: u16 = 16;

/// The default `connections_per_peer`: one per core this process may use
/// (cgroup quotas count), at most 8.
pub fn default_connections_per_peer() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, 8) as u16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: Spanned<RawGateway>,
    identity: Spanned<RawIdentity>,
    #[serde(default)]
    federation: Vec<Spanned<RawFederation>>,
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
    #[serde(default)]
    export: Vec<Spanned<RawExport>>,
    #[serde(default)]
    import: Vec<Spanned<RawImport>>,
    #[serde(default)]
    tunnel: Option<RawTunnel>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<String>>,
    target_check: Option<Spanned<String>>,
    hold_down: Option<Spanned<String>>,
    down_after: Option<Spanned<u32>>,
    up_after: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    name: Option<Spanned<String>>,
    region: Spanned<String>,
    drain_grace: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    relay: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    cert: Spanned<String>,
    key: Spanned<String>,
    bundle: Spanned<String>,
    deny: Option<Spanned<String>>,
    ca_service: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    region: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    trust_domain: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    trust_domain: Spanned<String>,
    bundle: Spanned<String>,
}

#[derive(Debug, Deserialize)]
struct RawExport {
    service: Spanned<String>,
    /// Optional to serde only: a misspelt key must be reported as unknown
    /// (see [`RawLimits`]) before the missing target is.
    target: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_workloads: Vec<String>,
    #[serde(default)]
    accept_relayed: Option<bool>,
    #[serde(flatten)]
    limits: RawLimits,
}

/// Limits of an import or export. Flattened into the section, so plain
/// values: spans do not survive serde's flatten buffering, and errors point
/// at the section's `service` line instead. serde's deny_unknown_fields
/// does not combine with flatten either, so unknown keys land in `unknown`.
#[derive(Debug, Default, Deserialize)]
struct RawLimits {
    max_concurrent: Option<usize>,
    max_per_client: Option<usize>,
    queue: Option<usize>,
    queue_timeout: Option<String>,
    rate: Option<f64>,
    burst: Option<u32>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawImport {
    service: Spanned<String>,
    listen: Spanned<String>,
    #[serde(default)]
    prefer: Vec<Spanned<String>>,
    #[serde(default)]
    mtls: bool,
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    local: Option<String>,
    #[serde(flatten)]
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    stream_window: Option<Spanned<u64>>,
    connection_window: Option<Spanned<u64>>,
    window_budget: Option<Spanned<u64>>,
    max_streams: Option<Spanned<u32>>,
    keep_alive: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    udp_buffer: Option<usize>,
    connect_timeout: Option<Spanned<String>>,
    open_timeout: Option<Spanned<String>>,
    stream_idle_timeout: Option<Spanned<String>>,
    first_byte_timeout: Option<Spanned<String>>,
    congestion: Option<Congestion>,
    tunnels_per_region: Option<Spanned<usize>>,
    connections_per_peer: Option<Spanned<u16>>,
    discover: Option<bool>,
    transport: Option<Transport>,
    handshake_retry_above: Option<usize>,
    max_handshakes: Option<Spanned<usize>>,
    handshake_strikes: Option<u32>,
}

/// A TOML file being validated: what turns a span into "file:line: key:".
pub(crate) struct Source<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
    /// Whether named files must exist (not when checking a config meant
    /// for another machine, such as a Kubernetes ConfigMap).
    pub(crate) files_must_exist: bool,
}

impl Source<'_> {
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(crate) fn err(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> GatewayError {
        GatewayError::Config {
            path: self.path.to_owned(),
            line: self.line(span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn name(&self, v: &Spanned<String>, key: &str) -> Result<String, GatewayError> {
        check_name(v.get_ref()).map_err(|m| self.err(v.span(), key, m))?;
        Ok(v.get_ref().clone())
    }

    fn addr(&self, v: &Spanned<String>, key: &str) -> Result<SocketAddr, GatewayError> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                key,
                format!(
                    "{:?} is not an address such as 127.0.0.1:15443",
                    v.get_ref()
                ),
            )
        })
    }

    fn host_port(&self, v: &Spanned<String>, key: &str) -> Result<String, GatewayError> {
        let s = v.get_ref();
        let ok = s.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if ok {
            Ok(s.clone())
        } else {
            Err(self.err(
                v.span(),
                key,
                format!("{s:?} is not host:port (e.g. gw.example.com:15443)"),
            ))
        }
    }

    pub(crate) fn duration(
        &self,
        v: &Spanned<String>,
        key: &str,
    ) -> Result<Duration, GatewayError> {
        humantime::parse_duration(v.get_ref()).map_err(|e| {
            self.err(
                v.span(),
                key,
                format!(
                    "{:?} is not a duration ({e}); write e.g. 500ms, 10s",
                    v.get_ref()
                ),
            )
        })
    }

    /// A duration that must not be zero (a timeout or interval of zero
    /// makes every tunnel or stream fail, or spins).
    fn nonzero_duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, GatewayError> {
        match self.duration(v, key)? {
            d if d.is_zero() => Err(self.err(v.span(), key, "must be greater than zero")),
            d => Ok(d),
        }
    }

    /// A window or stream limit: zero lets no stream carry a byte, so no
    /// tunnel could come up.
    fn nonzero<T: Copy + Default + PartialEq>(
        &self,
        v: &Spanned<T>,
        key: &str,
    ) -> Result<T, GatewayError> {
        if *v.get_ref() == T::default() {
            let reason = "must be at least 1: with 0 no tunnel can carry its control stream";
            return Err(self.err(v.span(), key, reason));
        }
        Ok(*v.get_ref())
    }

    /// Refuses keys of an import or export section that nothing reads.
    fn known_keys(
        &self,
        raw: &RawLimits,
        section: &str,
        at: std::ops::Range<usize>,
    ) -> Result<(), GatewayError> {
        match raw.unknown.keys().next() {
            Some(key) => Err(self.err(at, &format!("{section}.{key}"), "unknown key")),
            None => Ok(()),
        }
    }

    /// `at` is the span of the section's `service` key.
    fn limits(
        &self,
        raw: &RawLimits,
        section: &str,
        at: std::ops::Range<usize>,
    ) -> Result<Limits, GatewayError> {
        let err =
            |key: &str, message: &str| self.err(at.clone(), &format!("{section}.{key}"), message);
        self.known_keys(raw, section, at.clone())?;
        let mut limits = Limits::default();
        if section == "import" {
            limits.max_concurrent = Some(DEFAULT_IMPORT_MAX_CONCURRENT);
            limits.max_per_client = Some(DEFAULT_IMPORT_MAX_PER_CLIENT);
        }
        if let Some(v) = raw.max_per_client {
            if section != "import" {
                return Err(err(
                    "max_per_client",
                    "only an import limits its clients by address (an export's clients are gateways)",
                ));
            }
            if v == 0 {
                return Err(err("max_per_client", "must be at least 1"));
            }
            limits.max_per_client = Some(v);
        }
        if let Some(v) = raw.max_concurrent {
            if v == 0 {
                return Err(err("max_concurrent", "must be at least 1"));
            }
            limits.max_concurrent = Some(v);
        }
        limits.queue = raw.queue.unwrap_or(0);
        if let Some(v) = &raw.queue_timeout {
            limits.queue_timeout = humantime::parse_duration(v).map_err(|e| {
                err(
                    "queue_timeout",
                    &format!("{v:?} is not a duration ({e}); write e.g. 500ms"),
                )
            })?;
        }
        if let Some(v) = raw.rate {
            if !(v.is_finite() && v > 0.0) {
                return Err(err(
                    "rate",
                    "must be a number of streams per second above 0",
                ));
            }
            limits.rate = Some(v);
        }
        limits.burst = raw.burst;
        Ok(limits)
    }

    fn file(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, GatewayError> {
        let path = self.path(v);
        if self.files_must_exist {
            let shown = path.display();
            let problem = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("no such file: {shown}"))
                }
                Err(e) => Some(format!("cannot read {shown}: {e}")),
                Ok(m) if m.is_dir() => Some(format!("{shown} is a directory, not a file")),
                Ok(m) if !m.is_file() => Some(format!("{shown} is not a regular file")),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                return Err(self.err(v.span(), key, problem));
            }
        }
        Ok(path)
    }

    /// A path relative to the configuration file; it may not exist yet.
    fn path(&self, v: &Spanned<String>) -> PathBuf {
        let p = Path::new(v.get_ref());
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }
}

fn read(path: &Path) -> Result<String, GatewayError> {
    let bytes = std::fs::read(path).map_err(|source| GatewayError::Io {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        GatewayError::Toml {
            path: path.to_owned(),
            message: format!("line {line}: not UTF-8 text"),
        }
    })
}

/// Longest name (gateway, region, service) accepted: a DNS name's limit,
/// and what keeps a HELLO listing many services within one frame.
pub const MAX_NAME_LEN: usize = 253;

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("may not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "{name:?} holds {c:?}; use letters, digits, '-', '_' and '.'"
        )),
        None => Ok(()),
    }
}

impl GatewayConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<GatewayConfig, GatewayError> {
        Self::parse(path, &read(path)?)
    }

    /// Validates configuration text; `path` names it in errors and anchors
    /// relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<GatewayConfig, GatewayError> {
        Self::parse_inner(path, text, true)
    }

    /// Fills in the gateway name from the certificate (its gateway name,
    /// if it has one) when the file left it out.
    pub fn take_name_from(&mut self, certificate_name: Option<String>) {
        if self.name.is_empty()
            && let Some(name) = certificate_name
        {
            self.name = name;
        }
    }

    /// The remote regions this configuration names: `[[peer]]` regions
    /// and every import's `prefer`, sorted, without our own.
    pub fn peer_regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = self
            .peers
            .iter()
            .filter_map(|p| p.region.clone())
            .chain(self.imports.iter().flat_map(|i| i.prefer.iter().cloned()))
            .filter(|r| *r != self.region)
            .collect();
        regions.sort();
        regions.dedup();
        regions
    }

    /// Where peers should dial this gateway: `[gateway] advertise`, else
    /// the `STRAIT_ADVERTISE` environment variable (a DaemonSet sets it
    /// from the node's IP), else the QUIC address it is bound to when that
    /// is not unspecified (`0.0.0.0`). `None`: peers only learn of it when
    /// it dials them.
    pub fn advertise_address(
        &self,
        env: Option<String>,
        bound: SocketAddr,
    ) -> Result<Option<String>, GatewayError> {
        if let Some(a) = &self.advertise {
            return Ok(Some(a.clone()));
        }
        if let Some(a) = env.filter(|a| !a.trim().is_empty()) {
            let a = a.trim().to_owned();
            let ok = a.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !ok {
                return Err(GatewayError::Advertise(format!(
                    "STRAIT_ADVERTISE={a:?} is not host:port (e.g. 10.0.0.7:15443)"
                )));
            }
            return Ok(Some(a));
        }
        Ok((!bound.ip().is_unspecified()).then(|| bound.to_string()))
    }

    /// Validates a configuration file without requiring the files it names
    /// to exist here (a config for a container, checked on a laptop).
    pub fn load_without_files(path: &Path) -> Result<GatewayConfig, GatewayError> {
        Self::parse_without_files(path, &read(path)?)
    }

    /// Validates configuration text without requiring the files it names
    /// to exist; `path` names it in errors.
    pub fn parse_without_files(path: &Path, text: &str) -> Result<GatewayConfig, GatewayError> {
        Self::parse_inner(path, text, false)
    }

    fn parse_inner(
        path: &Path,
        text: &str,
        files_must_exist: bool,
    ) -> Result<GatewayConfig, GatewayError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| GatewayError::Toml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let src = Source {
            path,
            text,
            files_must_exist,
        };
        let gw = raw.gateway.get_ref();
        let name = match &gw.name {
            Some(n) => src.name(n, "gateway.name")?,
            None => String::new(),
        };
        let region = src.name(&gw.region, "gateway.region")?;
        let listen = match &gw.listen {
            Some(v) => src.addr(v, "gateway.listen")?,
            None => DEFAULT_LISTEN.parse().expect("valid default"),
        };
        let admin = match &gw.admin {
            Some(v) => src.addr(v, "gateway.admin")?,
            None => DEFAULT_ADMIN.parse().expect("valid default"),
        };
        let advertise = match &gw.advertise {
            Some(v) => Some(src.host_port(v, "gateway.advertise")?),
            None => None,
        };
        let id = raw.identity.get_ref();
        let bundle = src.file(&id.bundle, "identity.bundle")?;
        let deny = match &id.deny {
            Some(v) => src.path(v),
            None => bundle.with_file_name(strait_ca::DENY_FILE),
        };
        let identity = IdentityPaths {
            cert: src.file(&id.cert, "identity.cert")?,
            key: src.file(&id.key, "identity.key")?,
            bundle,
            deny,
        };
        let renewal = match &id.ca_service {
            Some(addr) => Some(RenewalConfig {
                ca_service: src.host_port(addr, "identity.ca_service")?,
                refresh: match &id.refresh {
                    Some(v) => src.nonzero_duration(v, "identity.refresh")?,
                    None => DEFAULT_REFRESH,
                },
            }),
            None => {
                if let Some(v) = &id.refresh {
                    return Err(src.err(
                        v.span(),
                        "identity.refresh",
                        "only means something with identity.ca_service",
                    ));
                }
                None
            }
        };

        let mut federation: Vec<FederationConfig> = Vec::new();
        for f in &raw.federation {
            let f = f.get_ref();
            let td = f.trust_domain.get_ref();
            if let Err(e) = strait_ca::TrustDomain::parse(td) {
                return Err(src.err(
                    f.trust_domain.span(),
                    "federation.trust_domain",
                    e.to_string(),
                ));
            }
            if federation.iter().any(|g| g.trust_domain == *td) {
                return Err(src.err(
                    f.trust_domain.span(),
                    "federation.trust_domain",
                    format!("{td:?} is federated twice"),
                ));
            }
            federation.push(FederationConfig {
                trust_domain: td.clone(),
                bundle: src.file(&f.bundle, "federation.bundle")?,
            });
        }

        let mut peers = Vec::new();
        for p in &raw.peer {
            let p = p.get_ref();
            let region = src.name(&p.region, "peer.region")?;
            let trust_domain = match &p.trust_domain {
                Some(v) if !federation.iter().any(|f| f.trust_domain == *v.get_ref()) => {
                    return Err(src.err(
                        v.span(),
                        "peer.trust_domain",
                        format!(
                            "{:?} is not federated: add a [[federation]] with its bundle",
                            v.get_ref()
                        ),
                    ));
                }
                Some(v) => Some(v.get_ref().clone()),
                None => None,
            };
            if p.addresses.get_ref().is_empty() {
                return Err(src.err(
                    p.addresses.span(),
                    "peer.addresses",
                    "needs at least one host:port",
                ));
            }
            let addresses = p
                .addresses
                .get_ref()
                .iter()
                .map(|a| src.host_port(a, "peer.addresses"))
                .collect::<Result<_, _>>()?;
            peers.push(PeerConfig {
                region: Some(region),
                trust_domain,
                addresses,
            });
        }

        let mut exports: Vec<ExportConfig> = Vec::new();
        let mut export_lines: HashMap<String, usize> = HashMap::new();
        for e in &raw.export {
            let e = e.get_ref();
            let service = src.name(&e.service, "export.service")?;
            if let Some(first) =
                export_lines.insert(service.clone(), src.line(e.service.span().start))
            {
                return Err(src.err(
                    e.service.span(),
                    "export.service",
                    format!("{service:?} is already exported on line {first}"),
                ));
            }
            src.known_keys(&e.limits, "export", e.service.span())?;
            let target = match &e.target {
                Some(t) => src.host_port(t, "export.target")?,
                None => {
                    let reason = "missing: the host:port this service is forwarded to";
                    return Err(src.err(e.service.span(), "export.target", reason));
                }
            };
            let mut allow = Vec::new();
            for a in &e.allow {
                if !a.get_ref().starts_with("spiffe://") {
                    return Err(src.err(
                        a.span(),
                        "export.allow",
                        format!(
                            "{:?} is not a SPIFFE ID pattern (spiffe://...)",
                            a.get_ref()
                        ),
                    ));
                }
                allow.push(a.get_ref().clone());
            }
            let limits = src.limits(&e.limits, "export", e.service.span())?;
            for p in &e.allow_workloads {
                if !p.starts_with("spiffe://") {
                    return Err(src.err(
                        e.service.span(),
                        "export.allow_workloads",
                        format!("{p:?} is not a SPIFFE ID pattern (spiffe://...)"),
                    ));
                }
            }
            exports.push(ExportConfig {
                service,
                target,
                allow,
                allow_workloads: e.allow_workloads.clone(),
                limits,
                accept_relayed: e.accept_relayed.unwrap_or(true),
            });
        }

        let mut used: HashMap<SocketAddr, (usize, String)> = HashMap::new();
        // TCP listeners (admin, imports) may not share an address; the QUIC
        // port is UDP and cannot clash with them.
        let mut claim = |addr: SocketAddr, line: usize, key: &str| -> Result<(), GatewayError> {
            if addr.port() == 0 {
                return Ok(());
            }
            // 0.0.0.0:P takes P on every address, so 127.0.0.1:P clashes.
            let overlaps = |other: &SocketAddr| {
                other.port() == addr.port()
                    && other.is_ipv4() == addr.is_ipv4()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            };
            if let Some((other, (first_line, first_key))) = used.iter().find(|(a, _)| overlaps(a)) {
                return Err(GatewayError::Config {
                    path: path.to_owned(),
                    line,
                    key: key.to_owned(),
                    message: if *other == addr {
                        format!("{addr} is already used by {first_key} on line {first_line}")
                    } else {
                        format!("{addr} overlaps {other}, used by {first_key} on line {first_line}")
                    },
                });
            }
            used.insert(addr, (line, key.to_owned()));
            Ok(())
        };
        let admin_line = gw
            .admin
            .as_ref()
            .map_or(src.line(raw.gateway.span().start), |a| {
                src.line(a.span().start)
            });
        claim(admin, admin_line, "gateway.admin")?;

        let mut imports = Vec::new();
        for i in &raw.import {
            let i = i.get_ref();
            let service = src.name(&i.service, "import.service")?;
            if let Some(line) = export_lines.get(&service) {
                return Err(src.err(
                    i.service.span(),
                    "import.service",
                    format!("{service:?} is also exported on line {line}; a gateway cannot import what it exports"),
                ));
            }
            let listen = src.addr(&i.listen, "import.listen")?;
            claim(listen, src.line(i.listen.span().start), "import.listen")?;
            let prefer = i
                .prefer
                .iter()
                .map(|r| src.name(r, "import.prefer"))
                .collect::<Result<_, _>>()?;
            let limits = src.limits(&i.limits, "import", i.service.span())?;
            let local = match &i.local {
                Some(l) => {
                    Some(src.host_port(&Spanned::new(i.service.span(), l.clone()), "import.local")?)
                }
                None => None,
            };
            imports.push(ImportConfig {
                service,
                listen,
                prefer,
                limits,
                mtls: i.mtls,
                idempotent: i.idempotent,
                local,
            });
        }

        let mut tunnel = TunnelSettings::default();
        if let Some(t) = &raw.tunnel {
            if let Some(v) = &t.stream_window {
                tunnel.stream_window = src.nonzero(v, "tunnel.stream_window")?;
            }
            if let Some(v) = &t.connection_window {
                tunnel.connection_window = src.nonzero(v, "tunnel.connection_window")?;
            }
            if let Some(v) = &t.window_budget {
                tunnel.window_budget = src.nonzero(v, "tunnel.window_budget")?;
            }
            if let Some(v) = &t.max_streams {
                tunnel.max_streams = src.nonzero(v, "tunnel.max_streams")?;
            }
            if let Some(v) = t.handshake_retry_above {
                tunnel.handshake_retry_above = v;
            }
            if let Some(v) = t.handshake_strikes {
                tunnel.handshake_strikes = v;
            }
            if let Some(v) = &t.max_handshakes {
                if *v.get_ref() == 0 {
                    return Err(src.err(
                        v.span(),
                        "tunnel.max_handshakes",
                        "must be at least 1: with 0 no peer could ever connect",
                    ));
                }
                tunnel.max_handshakes = *v.get_ref();
            }
            if let Some(v) = &t.tunnels_per_region {
                if *v.get_ref() == 0 {
                    return Err(src.err(
                        v.span(),
                        "tunnel.tunnels_per_region",
                        "must be at least 1",
                    ));
                }
                tunnel.tunnels_per_region = *v.get_ref();
            }
            if let Some(v) = &t.connections_per_peer {
                if !(1..=MAX_CONNECTIONS_PER_PEER).contains(v.get_ref()) {
                    return Err(src.err(
                        v.span(),
                        "tunnel.connections_per_peer",
                        format!("must be between 1 and {MAX_CONNECTIONS_PER_PEER}"),
                    ));
                }
                tunnel.connections_per_peer = *v.get_ref();
            }
            if let Some(v) = t.discover {
                tunnel.discover = v;
            }
            if let Some(v) = t.transport {
                tunnel.transport = v;
            }
            if let Some(v) = t.congestion {
                tunnel.congestion = v;
            }
            if let Some(v) = t.udp_buffer {
                tunnel.udp_buffer = v;
            }
            if let Some(v) = &t.keep_alive {
                tunnel.keep_alive = src.nonzero_duration(v, "tunnel.keep_alive")?;
            }
            if let Some(v) = &t.idle_timeout {
                tunnel.idle_timeout = src.nonzero_duration(v, "tunnel.idle_timeout")?;
            }
            if let Some(v) = &t.connect_timeout {
                tunnel.connect_timeout = src.nonzero_duration(v, "tunnel.connect_timeout")?;
            }
            if let Some(v) = &t.first_byte_timeout {
                tunnel.first_byte_timeout = src.nonzero_duration(v, "tunnel.first_byte_timeout")?;
            }
            if let Some(v) = &t.stream_idle_timeout {
                tunnel.stream_idle_timeout =
                    src.nonzero_duration(v, "tunnel.stream_idle_timeout")?;
            }
            if let Some(v) = &t.open_timeout {
                tunnel.open_timeout = src.nonzero_duration(v, "tunnel.open_timeout")?;
            }
        }

        let mut health = ProbeConfig::default();
        let mut target_check = Duration::from_secs(1);
        let mut hold_down = Duration::from_secs(5);
        if let Some(h) = &raw.health {
            if let Some(v) = &h.hold_down {
                hold_down = src.duration(v, "health.hold_down")?;
            }
            if let Some(v) = &h.target_check {
                target_check = src.nonzero_duration(v, "health.target_check")?;
            }
            if let Some(v) = &h.interval {
                health.interval = src.duration(v, "health.interval")?;
                if health.interval < Duration::from_millis(10) {
                    return Err(src.err(v.span(), "health.interval", "must be at least 10ms"));
                }
            }
            for (field, value, target) in [
                ("health.down_after", &h.down_after, &mut health.down_after),
                ("health.up_after", &h.up_after, &mut health.up_after),
            ] {
                if let Some(v) = value {
                    if *v.get_ref() == 0 {
                        return Err(src.err(v.span(), field, "must be at least 1"));
                    }
                    *target = *v.get_ref();
                }
            }
        }

        let drain_grace = match &gw.drain_grace {
            Some(v) => src.duration(v, "gateway.drain_grace")?,
            None => Duration::from_secs(30),
        };

        Ok(GatewayConfig {
            name,
            region,
            listen,
            advertise,
            admin,
            relay: gw.relay.unwrap_or(true),
            identity,
            federation,
            renewal,
            peers,
            exports,
            imports,
            tunnel,
            health,
            target_check,
            hold_down,
            drain_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(tempfile::TempDir);

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        for f in ["cert.pem", "key.pem", "bundle.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        Files(dir)
    }

    const GOOD: &str = r#"[gateway]
name = "gw-1"
region = "eu-west"
listen = "0.0.0.0:15443"
admin = "127.0.0.1:15000"

[identity]
cert = "cert.pem"
key = "key.pem"
bundle = "bundle.pem"

[[peer]]
region = "us-east"
addresses = ["gw.us-east.example.com:15443", "10.0.0.7:15443"]

[[export]]
service = "payments"
target = "payments.default.svc.cluster.local:8080"
allow = ["spiffe://example.org/region/us-east/gateway/*"]

[[import]]
service = "orders"
listen = "127.0.0.1:19080"
"#;

    fn parse(f: &Files, text: &str) -> Result<GatewayConfig, GatewayError> {
        GatewayConfig::parse(&f.0.path().join("gw.toml"), text)
    }

    fn error(text: &str) -> String {
        let f = files();
        let e = parse(&f, text).unwrap_err().to_string();
        e.replace(&f.0.path().display().to_string(), "DIR")
    }

    #[test]
    fn the_documented_shape_parses() {
        let f = files();
        let c = parse(&f, GOOD).unwrap();
        assert_eq!(c.name, "gw-1");
        assert_eq!(c.peers[0].addresses.len(), 2);
        assert_eq!(c.peers[0].region.as_deref(), Some("us-east"));
        assert_eq!(c.exports[0].allow.len(), 1);
        assert_eq!(c.imports[0].listen, "127.0.0.1:19080".parse().unwrap());
        // Relative paths are relative to the file.
        assert_eq!(c.identity.cert, f.0.path().join("cert.pem"));
        assert_eq!(c.tunnel.congestion, Congestion::Bbr);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = error(&GOOD.replace("admin = ", "speed = 3\nadmin = "));
        assert!(
            e.contains("line 5") && e.contains("unknown field `speed`"),
            "{e}"
        );
        let e = error(&GOOD.replace("\"127.0.0.1:19080\"", "\"localhost-19080\""));
        assert!(e.starts_with("DIR/gw.toml:23: import.listen:"), "{e}");
        let e = error(&GOOD.replace("\"127.0.0.1:19080\"", "\"127.0.0.1:15000\""));
        assert!(e.starts_with("DIR/gw.toml:23: import.listen: 127.0.0.1:15000 is already used by gateway.admin on line 5"), "{e}");
        let two = format!("{GOOD}\n[[import]]\nservice = \"stock\"\nlisten = \"0.0.0.0:19080\"\n");
        let e = error(&two);
        assert!(e.starts_with("DIR/gw.toml:27: import.listen: 0.0.0.0:19080 overlaps 127.0.0.1:19080, used by import.listen on line 23"), "{e}");
        let long = "s".repeat(MAX_NAME_LEN + 1);
        let e = error(&GOOD.replace("service = \"orders\"", &format!("service = \"{long}\"")));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.service: is 254 characters long"),
            "{e}"
        );
        let e = error(&GOOD.replace("key = \"key.pem\"", "key = \"missing.pem\""));
        assert!(
            e.starts_with("DIR/gw.toml:9: identity.key: no such file"),
            "{e}"
        );
        let e = error(&GOOD.replace("service = \"orders\"", "service = \"payments\""));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.service:")
                && e.contains("also exported on line 17"),
            "{e}"
        );
        let e = error(&GOOD.replace("\"10.0.0.7:15443\"", "\"10.0.0.7\""));
        assert!(
            e.starts_with("DIR/gw.toml:14: peer.addresses:") && e.contains("host:port"),
            "{e}"
        );
        let e = error(&GOOD.replace("spiffe://example.org/region", "https://example.org/region"));
        assert!(e.starts_with("DIR/gw.toml:19: export.allow:"), "{e}");
        let e = error(&GOOD.replace("name = \"gw-1\"", "name = \"gw 1\""));
        assert!(e.starts_with("DIR/gw.toml:2: gateway.name:"), "{e}");
        let dup = format!("{GOOD}\n[[export]]\nservice = \"payments\"\ntarget = \"x:1\"\n");
        let e = error(&dup);
        assert!(
            e.contains("export.service: \"payments\" is already exported on line 17"),
            "{e}"
        );
        let e = error(&GOOD.replace(
            "[[import]]",
            "[tunnel]\nidle_timeout = \"soon\"\n\n[[import]]",
        ));
        assert!(e.contains("tunnel.idle_timeout:"), "{e}");
    }

    #[test]
    fn errors_name_what_is_wrong_with_the_input() {
        let e = error(&GOOD.replace("target = ", "targt = "));
        assert!(
            e.starts_with("DIR/gw.toml:17: export.targt: unknown key"),
            "{e}"
        );
        let e = error(&GOOD.replace("target = \"payments.default.svc.cluster.local:8080\"\n", ""));
        assert!(
            e.starts_with("DIR/gw.toml:17: export.target: missing"),
            "{e}"
        );
        let f = files();
        std::fs::create_dir(f.0.path().join("certs")).unwrap();
        let e = parse(&f, &GOOD.replace("\"cert.pem\"", "\"certs\"")).unwrap_err();
        assert!(
            e.to_string().contains("certs is a directory, not a file"),
            "{e}"
        );
        let e = parse(&f, &GOOD.replace("\"cert.pem\"", "\"/dev/null\"")).unwrap_err();
        assert!(
            e.to_string().contains("/dev/null is not a regular file"),
            "{e}"
        );
        let file = f.0.path().join("gw.toml");
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.splice(
            GOOD.find("eu-west").unwrap()..GOOD.find("eu-west").unwrap(),
            [0xff],
        );
        std::fs::write(&file, bytes).unwrap();
        let e = GatewayConfig::load(&file).unwrap_err().to_string();
        assert!(e.ends_with("gw.toml: line 3: not UTF-8 text"), "{e}");
    }

    #[test]
    fn zero_windows_stream_limits_and_timeouts_are_refused() {
        for (line, key) in [
            ("stream_window = 0", "tunnel.stream_window"),
            ("connection_window = 0", "tunnel.connection_window"),
            ("window_budget = 0", "tunnel.window_budget"),
            ("max_streams = 0", "tunnel.max_streams"),
            ("keep_alive = \"0s\"", "tunnel.keep_alive"),
            ("idle_timeout = \"0s\"", "tunnel.idle_timeout"),
            ("connect_timeout = \"0ms\"", "tunnel.connect_timeout"),
            ("open_timeout = \"0s\"", "tunnel.open_timeout"),
            ("stream_idle_timeout = \"0s\"", "tunnel.stream_idle_timeout"),
        ] {
            let e = error(&format!("{GOOD}\n[tunnel]\n{line}\n"));
            assert!(
                e.starts_with(&format!("DIR/gw.toml:26: {key}: must be")),
                "{e}"
            );
        }
        let e = error(&format!("{GOOD}\n[health]\ntarget_check = \"0s\"\n"));
        assert!(
            e.starts_with("DIR/gw.toml:26: health.target_check: must be greater than zero"),
            "{e}"
        );
    }

    #[test]
    fn limits_parse_and_bad_limits_name_the_section() {
        let f = files();
        let with = |lines: &str| {
            GOOD.replace(
                "listen = \"127.0.0.1:19080\"",
                &format!("listen = \"127.0.0.1:19080\"\nprefer = [\"us-east\"]\n{lines}"),
            )
        };
        let c = parse(
            &f,
            &with(
                "max_concurrent = 10\nqueue = 5\nqueue_timeout = \"250ms\"\nrate = 20.5\nburst = 4",
            ),
        )
        .unwrap();
        let l = &c.imports[0].limits;
        assert_eq!(l.max_concurrent, Some(10));
        assert_eq!(l.queue, 5);
        assert_eq!(l.queue_timeout, Duration::from_millis(250));
        assert_eq!(l.rate, Some(20.5));
        assert_eq!(l.burst, Some(4));
        assert_eq!(c.imports[0].prefer, vec!["us-east".to_string()]);
        assert_eq!(c.exports[0].limits, Limits::default());
        let e = error(&with("max_concurent = 3"));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.max_concurent: unknown key"),
            "{e}"
        );
        let e = error(&with("max_concurrent = 0"));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.max_concurrent: must be at least 1"),
            "{e}"
        );
        let e = error(&with("rate = -1.0"));
        assert!(e.starts_with("DIR/gw.toml:22: import.rate:"), "{e}");
        let e = error(&with("queue_timeout = \"soon\""));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.queue_timeout:"),
            "{e}"
        );
        assert_eq!(l.max_per_client, Some(DEFAULT_IMPORT_MAX_PER_CLIENT));
        let c = parse(&f, &with("max_per_client = 50")).unwrap();
        assert_eq!(c.imports[0].limits.max_per_client, Some(50));
        let e = error(&with("max_per_client = 0"));
        assert!(
            e.starts_with("DIR/gw.toml:22: import.max_per_client: must be at least 1"),
            "{e}"
        );
    }
}
