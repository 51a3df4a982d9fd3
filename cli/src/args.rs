//! The command line, as clap derive structs. Values are parsed into typed
//! forms here (durations, key types, SPIFFE IDs) so commands never re-parse.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use strait_ca::{KeyType, SpiffeId, TrustDomain};

/// strait: a cross-region mTLS tunnel gateway.
///
/// Gateways in different regions hold mutually authenticated QUIC tunnels and
/// carry TCP service streams over them. This command issues the certificates
/// they use, runs gateways and opens ad-hoc tunnels.
#[derive(Debug, Parser)]
#[command(name = "strait", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and manage the certificate authority of a mesh.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue, request, sign, inspect and verify SPIFFE certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a gateway, or check its configuration.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Open ad-hoc tunnels without a configuration file.
    #[command(subcommand)]
    Tunnel(TunnelCommand),
    /// Create and list join tokens for new gateways.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the demo mesh on this machine: three regions through netsim, a
    /// client load, a partition of the preferred region and its healing,
    /// then a summary and a report with a plot. About a minute.
    Demo(Demo),
    /// Show a gateway's view of the mesh: peers with state, RTT, loss,
    /// streams, services and when each was last heard from; which regions
    /// serve each service; the latest events.
    Status(Status),
    /// Explain where the next stream of an imported service goes: every
    /// candidate tunnel with its verdict (excluded and why: down, draining,
    /// closed, superseded, not offered, target down, circuit open; or its
    /// rank, tier, class and RTT) and the one the routing plane would take.
    /// The gateway's own routing code answers, not a second copy of it.
    Why(Why),
    /// Rehearse faults against running gateways, through their admin
    /// endpoints: a scenario file (the fault soak's format) of regional
    /// partitions and black holes that the gateways end by themselves.
    #[command(subcommand)]
    Drill(DrillCommand),
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Play a scenario against live gateways and report, for each step,
    /// how long traffic took to leave the cut region, the streams that
    /// failed and were replayed, and how long the mesh took to return to
    /// where it was. Each cut is a black hole the gateways are told to
    /// keep for the step's duration and end by themselves (so a drill
    /// whose runner dies still ends). Admin endpoints take drills only
    /// from loopback: run this on the gateways' hosts, or through
    /// `kubectl port-forward`. Exits 1 if traffic did not leave a cut
    /// region or the mesh did not return within `[drill] settle`.
    Run(DrillRun),
    /// End every drill in force on a gateway (or the one given) now.
    End {
        /// The gateway's admin address.
        #[arg(long, default_value = "http://127.0.0.1:15000", env = "STRAIT_ADMIN")]
        admin: String,
        /// The drill's number, from `strait status --json` (all when absent).
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct DrillRun {
    /// The scenario file (TOML; see `docs/drills.md`). Against live
    /// gateways it may hold `partition` and `flap` steps.
    pub scenario: PathBuf,
    /// The admin address of every gateway taking part (repeat the flag);
    /// each gateway's region is read from its `/status`.
    #[arg(long = "admin", required = true)]
    pub admins: Vec<String>,
    /// Check the scenario and the gateways, print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Why {
    /// The imported service.
    pub service: String,
    /// The gateway's admin address.
    #[arg(long, default_value = "http://127.0.0.1:15000", env = "STRAIT_ADMIN")]
    pub admin: String,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Status {
    /// The gateway's admin address.
    #[arg(long, default_value = "http://127.0.0.1:15000", env = "STRAIT_ADMIN")]
    pub admin: String,
    /// Redraw every second.
    #[arg(long)]
    pub watch: bool,
    /// Print the raw JSON of /status.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Demo {
    /// How long the demo runs; the cut comes at 1/4, the heal at 7/12.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of netsim's random decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What happens to the preferred region.
    #[arg(long, value_enum, default_value_t = Scenario::Partition)]
    pub scenario: Scenario,
    /// Directory for the report (report.html, timeline.svg, samples.csv,
    /// gateways.log).
    #[arg(long, default_value = "strait-demo-report")]
    pub report: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// eu-west and us-east cannot reach each other.
    Partition,
    /// us-east -> eu-west is dropped; eu-west -> us-east still flows.
    Oneway,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Run a gateway until SIGINT or SIGTERM (SIGTERM drains first).
    ///
    /// The configuration file is reloaded on SIGHUP and when it changes;
    /// paths in it are relative to the file. Identity files are reloaded
    /// when they change. Log levels come from RUST_LOG (default info).
    Run(GatewayRun),
    /// Validate a configuration file (and the identity it names) and exit.
    Check {
        /// The gateway configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Check the configuration only: do not require or load the
        /// identity files it names (a config meant for a container).
        #[arg(long)]
        skip_identity: bool,
    },
    /// Join a mesh with a join token: make a key here, have the CA service
    /// named in the token sign it, and write cert.pem, key.pem (0600),
    /// bundle.pem and deny.txt into --out. The CA is checked against the
    /// root fingerprint the token carries before the token's secret is
    /// sent.
    Join(GatewayJoin),
}

#[derive(Debug, Args)]
pub struct GatewayJoin {
    /// The join token (from `strait token create`).
    #[arg(
        long,
        env = "STRAIT_JOIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the join token from a file (a mounted Secret).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Directory to write the identity into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// This gateway's name (must match the token's name pattern); in
    /// Kubernetes, the node name. Default: this machine's host name.
    #[arg(long, env = "STRAIT_GATEWAY_NAME")]
    pub name: Option<String>,
    /// The region to join; the token's region when absent (the CA refuses
    /// any other).
    #[arg(long)]
    pub region: Option<String>,
    /// Succeed without contacting the CA when --out already holds a
    /// certificate that is still valid (a restarted pod).
    #[arg(long, conflicts_with = "force")]
    pub if_missing: bool,
    /// Replace an identity already in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it. The CA keeps only a hash of its
    /// secret; the token also carries the CA service's address and the
    /// SHA-256 of the CA's root, so the joining side can pin the CA.
    Create(TokenCreate),
    /// List the join tokens of a CA (never their secrets).
    List {
        /// CA directory.
        #[arg(long, default_value = "ca")]
        ca: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// CA directory.
    #[arg(long, default_value = "ca")]
    pub ca: PathBuf,
    /// The region a gateway joining with this token gets.
    #[arg(long)]
    pub region: String,
    /// Pattern the joining gateway's name must match (`*` and `?`).
    #[arg(long, default_value = "*")]
    pub name: String,
    /// How long the token can be used.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How many gateways may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// The CA service's address as joining gateways reach it (host:port;
    /// repeatable). Default: what `strait ca serve` recorded in the CA
    /// directory.
    #[arg(long = "ca-address")]
    pub ca_address: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GatewayRun {
    /// The gateway configuration (TOML). Paths in it are relative to this
    /// file; it is reloaded on SIGHUP and when it changes.
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Logging and runtime options of long-running commands.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Log format; levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Worker threads [default: one per core this process may use, cgroup
    /// CPU quotas counted]. 0 or 1 runs everything on one thread. Pair it
    /// with `[tunnel] connections_per_peer` (same default): one QUIC
    /// connection is driven by one thread at a time.
    #[arg(long, env = "STRAIT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Listen on a local TCP address and carry each connection to a service
    /// that a peer gateway exports, like `cloudflared access tcp`. The
    /// certificate must be a gateway identity of the mesh.
    Open(TunnelOpen),
}

#[derive(Debug, Args)]
pub struct TunnelOpen {
    /// The peer gateway's QUIC address, host:port.
    #[arg(long)]
    pub peer: String,
    /// Require the peer to be a gateway of this region.
    #[arg(long)]
    pub peer_region: Option<String>,
    /// The service to reach.
    #[arg(long)]
    pub service: String,
    /// Local TCP address to listen on.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// This gateway's certificate chain (PEM, leaf first): a gateway
    /// identity of the mesh, from `strait cert issue --gateway` or `strait
    /// gateway join`.
    #[arg(long)]
    pub cert: PathBuf,
    /// The private key of --cert (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The trust bundle (PEM roots) the peer's certificate must chain to;
    /// deny.txt next to it, if present, is honoured.
    #[arg(long)]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (root, and optionally an intermediate) in a directory.
    ///
    /// Writes ca.pem and ca-key.pem (the root), intermediate.pem and
    /// intermediate-key.pem with --intermediate, and bundle.pem (what peers
    /// trust). Keys are written with mode 0600. An existing CA is never
    /// overwritten.
    Init(CaInit),
    /// Make the regional CA of one region: an intermediate signed by the
    /// root, which issues (and serves joins and renewals for) gateway
    /// identities of that region only; every strait verifier refuses a
    /// gateway certificate it issued for another region. The root key is
    /// needed only now: afterwards the root can go offline, and a region
    /// cut off from the others keeps renewing from its own CA service
    /// (`strait ca serve --ca DIR`). The root must have been made with
    /// `strait ca init --intermediate`.
    ///
    /// Writes intermediate.pem and intermediate-key.pem (0600), and the
    /// root's ca.pem and bundle.pem, into --dir; never the root's key.
    Intermediate(CaIntermediate),
    /// Serve the CA over QUIC with mutual TLS (ALPN strait-ca/1): sign
    /// CSRs of gateways that present a join token or their current
    /// certificate, and hand out the trust bundle and deny list. Runs until
    /// SIGINT or SIGTERM.
    Serve(CaServe),
    /// Add a certificate serial or a SPIFFE ID to the deny list (deny.txt in
    /// the CA directory). Gateways that renew or refresh through the CA
    /// service get it, refuse the peer and cut its tunnels.
    Revoke(CaRevoke),
    /// Print the CA's trust bundle, for a partner trust domain to federate
    /// with this one (its gateways' `[[federation]] bundle = FILE`): PEM,
    /// or a SPIFFE bundle document (JSON, `--format spiffe`), the format
    /// SPIFFE federation exchanges. Only public certificates are printed.
    Bundle(CaBundle),
}

#[derive(Debug, Args)]
pub struct CaBundle {
    /// CA directory (a regional CA's directory prints the same roots).
    #[arg(long, default_value = "ca")]
    pub ca: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
    pub format: BundleFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BundleFormat {
    /// The root certificates, PEM.
    Pem,
    /// A SPIFFE bundle document: one x509-svid JWK per root, with the
    /// certificate in x5c.
    Spiffe,
}

#[derive(Debug, Args)]
pub struct CaServe {
    /// CA directory.
    #[arg(long, default_value = "ca")]
    pub ca: PathBuf,
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:15444")]
    pub listen: std::net::SocketAddr,
    /// The address gateways use to reach this service (host:port), put into
    /// new join tokens. Default: the listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Lifetime of the certificates it issues.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub validity: Duration,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct RevokeWhat {
    /// Certificate serial (hex, colons optional), as `strait cert inspect`
    /// prints it.
    #[arg(long)]
    pub serial: Vec<String>,
    /// SPIFFE ID: every certificate of this identity.
    #[arg(long, value_parser = parse_spiffe_id)]
    pub id: Vec<SpiffeId>,
    /// A certificate file: its serial.
    #[arg(long)]
    pub cert: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaRevoke {
    /// CA directory.
    #[arg(long, default_value = "ca")]
    pub ca: PathBuf,
    #[command(flatten)]
    pub what: RevokeWhat,
}

#[derive(Debug, Args)]
pub struct CaInit {
    /// Trust domain of the mesh, e.g. example.org.
    #[arg(long, value_parser = parse_trust_domain)]
    pub trust_domain: TrustDomain,
    /// Directory to create the CA in.
    #[arg(long)]
    pub dir: PathBuf,
    /// Also create an intermediate CA that signs all certificates, so the
    /// root key (ca-key.pem) can be kept offline.
    #[arg(long)]
    pub intermediate: bool,
    /// Key type of the CA keys.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// How long the CA is valid (e.g. 10y, 90d, 1h).
    #[arg(long, default_value = "10y", value_parser = parse_duration)]
    pub validity: Duration,
}

#[derive(Debug, Args)]
pub struct CaIntermediate {
    /// The root CA's directory (ca.pem and ca-key.pem).
    #[arg(long)]
    pub root: PathBuf,
    /// The region whose gateway identities the new CA issues.
    #[arg(long)]
    pub region: String,
    /// Directory to create the regional CA in.
    #[arg(long)]
    pub dir: PathBuf,
    /// Key type of the regional CA's key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// How long the regional CA is valid (at most as long as the root).
    #[arg(long, default_value = "1y", value_parser = parse_duration)]
    pub validity: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a certificate and a new private key from a CA directory.
    ///
    /// Writes cert.pem (leaf, then intermediates), key.pem (mode 0600) and
    /// bundle.pem into --out.
    Issue(CertIssue),
    /// Make a private key and a certificate signing request locally.
    ///
    /// Writes key.pem (mode 0600) and csr.pem into --out; only csr.pem needs
    /// to reach the CA.
    Csr(CertCsr),
    /// Sign a CSR with a CA. The CA decides the SPIFFE ID and lifetime; the
    /// CSR only proves possession of the key.
    ///
    /// Writes cert.pem and bundle.pem into --out.
    Sign(CertSign),
    /// Show the certificates in a PEM file: subject, SPIFFE ID, issuer,
    /// validity and time left, key type, usages and SHA-256 fingerprint.
    Inspect(CertInspect),
    /// Verify a certificate chain against a trust bundle. Prints the SPIFFE
    /// ID and exits 0, or prints the reason and exits 1.
    Verify(CertVerify),
}

#[derive(Debug, Args)]
pub struct CertIssue {
    /// CA directory (from `strait ca init`).
    #[arg(long)]
    pub ca: PathBuf,
    /// Issue a gateway identity: spiffe://<td>/region/<region>/gateway/<name>.
    #[arg(long, requires_all = ["region", "name"], conflicts_with = "spiffe_id")]
    pub gateway: bool,
    /// Region of the gateway (with --gateway).
    #[arg(long, requires = "gateway")]
    pub region: Option<String>,
    /// Name of the gateway (with --gateway).
    #[arg(long, requires = "gateway")]
    pub name: Option<String>,
    /// The SPIFFE ID to certify, e.g. spiffe://example.org/ns/shop/sa/web.
    #[arg(long, value_parser = parse_spiffe_id, required_unless_present = "gateway")]
    pub spiffe_id: Option<SpiffeId>,
    #[command(flatten)]
    pub common: IssueOptions,
    /// Key type of the new private key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
}

/// Options shared by `cert issue` and `cert sign`.
#[derive(Debug, Args)]
pub struct IssueOptions {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Extra DNS name to put in the certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// Certificate lifetime (e.g. 24h, 30m, 7d); may not outlive the CA.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Replace existing files in --out instead of refusing.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertCsr {
    /// The SPIFFE ID to request.
    #[arg(long, value_parser = parse_spiffe_id)]
    pub spiffe_id: SpiffeId,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Key type of the new private key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// Replace existing files in --out instead of refusing.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertSign {
    /// CA directory (from `strait ca init`).
    #[arg(long)]
    pub ca: PathBuf,
    /// The PEM certificate signing request to sign.
    #[arg(long)]
    pub csr: PathBuf,
    /// The SPIFFE ID the certificate will carry (whatever the CSR asked for).
    #[arg(long, value_parser = parse_spiffe_id)]
    pub spiffe_id: SpiffeId,
    #[command(flatten)]
    pub common: IssueOptions,
}

#[derive(Debug, Args)]
pub struct CertInspect {
    /// PEM file with one or more certificates.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CertVerify {
    /// PEM file of trusted roots.
    #[arg(long)]
    pub bundle: PathBuf,
    /// PEM file with the leaf certificate, then any intermediates.
    pub file: PathBuf,
    /// Require this trust domain (default: the certificate's own).
    #[arg(long, value_parser = parse_trust_domain)]
    pub trust_domain: Option<TrustDomain>,
    /// Require a gateway identity.
    #[arg(long)]
    pub gateway: bool,
    /// Require a gateway of this region (implies --gateway).
    #[arg(long)]
    pub region: Option<String>,
    /// Verify for use as a TLS client or server (extended key usage).
    #[arg(long, value_enum, default_value_t = RoleArg::Client)]
    pub role: RoleArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyTypeArg {
    P256,
    P384,
    Ed25519,
}

impl From<KeyTypeArg> for KeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::P256 => KeyType::P256,
            KeyTypeArg::P384 => KeyType::P384,
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Client,
    Server,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 30s, 15m, 24h, 90d, 10y)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

fn parse_spiffe_id(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}

fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
