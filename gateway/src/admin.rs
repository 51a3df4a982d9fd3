//! The admin endpoint: `/healthz` (alive), `/readyz` (identity loaded,
//! listeners bound, certificate not expired, not draining), `/status` (JSON: peers, services,
//! imports, each import's route decision), `/why?service=NAME` (the routing
//! plane's verdict on every candidate, what `strait why` prints) and
//! `/metrics` (Prometheus text). A deliberately small HTTP/1.1 responder on loopback; it never
//! blocks the data plane and answers one request per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ImportConfig;
use crate::events::EventLog;
use crate::handle::PlaneHandle;
use crate::telemetry::MeshView;

const MAX_REQUEST: usize = 8 * 1024;

/// What the admin endpoint reports.
#[derive(Debug)]
pub struct AdminState {
    /// Drills in force, and what starts and ends them.
    pub drills: Arc<crate::drill::DrillControl>,
    pub exports_state: Arc<crate::export::Exports>,
    pub id: String,
    pub name: String,
    pub region: String,
    /// Which gateway of those sharing the certificate this is, and where
    /// peers dial it (empty: not known).
    pub instance: String,
    pub advertise: String,
    /// Gateways learned from the mesh.
    pub directory: Arc<crate::directory::Directory>,
    pub handle: Arc<PlaneHandle>,
    pub events: Arc<EventLog>,
    pub mesh: Arc<MeshView>,
    pub imports: std::sync::Mutex<Vec<ImportConfig>>,
    /// The remote regions the configuration names (`[[peer]]` regions and
    /// imports' `prefer`): reported even while none of their gateways is
    /// reached.
    pub peer_regions: std::sync::Mutex<Vec<String>>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    /// The identity in force (it changes with renewals and reloads).
    pub identity: Arc<crate::reload::CurrentIdentity>,
}

#[derive(Serialize)]
struct Status<'a> {
    id: &'a str,
    name: &'a str,
    region: &'a str,
    instance: &'a str,
    advertise: &'a str,
    ready: bool,
    draining: bool,
    certificate: CertificateStatus,
    /// One per connection to a gateway (several per region, and one per
    /// lane of each gateway: `connections_per_peer`).
    peers: Vec<PeerStatus>,
    /// Every gateway of other regions learned from HELLO and telemetry,
    /// tunnel or not.
    gateways: Vec<crate::directory::KnownGateway>,
    imports: Vec<ImportStatus>,
    /// Where the next stream of each import would go, and why.
    routes: Vec<strait_core::plane::Decision>,
    exports: Vec<String>,
    /// Oldest first.
    events: Vec<crate::events::Event>,
    /// Every gateway heard of, this one first, with the age of its figures.
    mesh: Vec<crate::telemetry::MeshEntry>,
    /// Drills in force (black holes to a region), ending by themselves.
    drills: Vec<crate::drill::DrillStatus>,
}

#[derive(Serialize)]
struct Why<'a> {
    service: &'a str,
    prefer: &'a [String],
    idempotent: bool,
    #[serde(flatten)]
    decision: strait_core::plane::Decision,
}

#[derive(Serialize)]
struct CertificateStatus {
    not_before: String,
    not_after: String,
    /// Negative once expired.
    remaining_seconds: i64,
    serial: String,
    deny_list_entries: usize,
}

#[derive(Serialize)]
struct PeerStatus {
    id: String,
    name: String,
    region: String,
    instance: String,
    /// Where it says it is dialed.
    advertise: String,
    /// Which of the connections to this gateway (0 the first).
    lane: u16,
    /// The other end of the tunnel as seen from here.
    address: String,
    dialed: bool,
    state: &'static str,
    rtt_ms: f64,
    probe_loss: f64,
    active_streams: usize,
    /// Milliseconds since the peer last answered a probe.
    last_seen_ms: u64,
    services: Vec<ServiceStatus>,
    /// What QUIC knows of the connection (absent once it closed).
    transport: Option<crate::transport::TransportStats>,
}

#[derive(Serialize)]
struct ServiceStatus {
    name: String,
    healthy: bool,
}

#[derive(Serialize)]
struct ImportStatus {
    service: String,
    listen: String,
}

impl AdminState {
    fn status_json(&self) -> String {
        let view = self.handle.view();
        let peers = view
            .conns
            .iter()
            .filter(|c| c.role == "active")
            .map(|c| {
                let tunnel = self.handle.tunnel(c.conn);
                PeerStatus {
                    id: c.peer.id.clone(),
                    name: c.peer.name.clone(),
                    region: c.peer.region.clone(),
                    instance: c.peer.instance.clone(),
                    lane: c.peer.lane,
                    advertise: tunnel
                        .as_ref()
                        .map(|t| t.advertise.clone())
                        .unwrap_or_default(),
                    address: tunnel
                        .as_ref()
                        .map(|t| t.remote_address().to_string())
                        .unwrap_or_default(),
                    dialed: c.dialed,
                    state: c.state,
                    rtt_ms: c
                        .rtt_us
                        .map(|us| us as f64 / 1e3)
                        .or_else(|| tunnel.as_ref().map(|t| t.conn.rtt().as_secs_f64() * 1e3))
                        .unwrap_or_default(),
                    probe_loss: c.loss,
                    active_streams: c.active_streams,
                    last_seen_ms: c.quiet_ms,
                    services: c
                        .services
                        .iter()
                        .map(|s| ServiceStatus {
                            name: s.name.clone(),
                            healthy: s.healthy,
                        })
                        .collect(),
                    transport: tunnel
                        .as_ref()
                        .filter(|t| !t.is_closed())
                        .map(|t| crate::transport::TransportStats::of(&t.conn)),
                }
            })
            .collect();
        let held = self.identity.get();
        let remaining = strait_core::renewal::seconds_left(
            held.identity.not_after,
            std::time::SystemTime::now(),
        ) as i64;
        let certificate = CertificateStatus {
            not_before: strait_ca::time::rfc3339(held.identity.not_before),
            not_after: strait_ca::time::rfc3339(held.identity.not_after),
            remaining_seconds: remaining,
            serial: held
                .identity
                .chain
                .first()
                .and_then(|c| strait_ca::certificate_serial(c))
                .unwrap_or_default(),
            deny_list_entries: held.deny.len(),
        };
        let status = Status {
            id: &self.id,
            name: &self.name,
            region: &self.region,
            instance: &self.instance,
            advertise: &self.advertise,
            ready: self.is_ready(),
            draining: self.draining.load(Ordering::SeqCst),
            certificate,
            peers,
            gateways: self.directory.known(),
            imports: self
                .import_list()
                .iter()
                .map(|i| ImportStatus {
                    service: i.service.clone(),
                    listen: i.listen.to_string(),
                })
                .collect(),
            routes: self
                .import_list()
                .iter()
                .map(|i| {
                    self.handle
                        .plan(&i.service, &i.prefer, crate::handle::coins())
                })
                .collect(),
            exports: self.exports_state.names(),
            events: self.events.snapshot(),
            mesh: self.mesh.snapshot(
                self.mesh.own_report(&self.handle, &self.exports_state),
                tokio::time::Instant::now(),
            ),
            drills: self.drills.status(),
        };
        serde_json::to_string_pretty(&status).unwrap_or_else(|_| "{}".into())
    }

    /// What `/metrics` reads from live state (`crate::scrape`).
    fn live_metrics(&self) -> Vec<crate::scrape::Family> {
        let view = self.handle.view();
        let wanted = self
            .peer_regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mesh = self.mesh.snapshot(
            self.mesh.own_report(&self.handle, &self.exports_state),
            tokio::time::Instant::now(),
        );
        let mut families = vec![
            crate::scrape::tunnel_state(&self.region, &view.conns),
            crate::scrape::region_gateways(&self.region, &wanted, &view.conns),
            crate::scrape::mesh_ages(&self.region, &mesh),
        ];
        families.extend(crate::transport::families(&self.handle));
        families.extend(self.drills.families());
        families
    }

    fn import_list(&self) -> Vec<ImportConfig> {
        self.imports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The plane's decision for the next stream of `service`, as JSON;
    /// `None` when no import of that name exists.
    fn why_json(&self, service: &str) -> Option<String> {
        let import = self
            .import_list()
            .into_iter()
            .find(|i| i.service == service)?;
        let decision = self
            .handle
            .plan(&import.service, &import.prefer, crate::handle::coins());
        serde_json::to_string_pretty(&Why {
            service: &import.service,
            prefer: &import.prefer,
            idempotent: import.idempotent,
            decision,
        })
        .ok()
    }

    fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why `/readyz` says not ready: starting, draining, or a certificate
    /// that expired (peers refuse every new tunnel until it is renewed).
    fn not_ready_because(&self) -> Option<String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some("starting".into());
        }
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining".into());
        }
        let not_after = self.identity.get().identity.not_after;
        (not_after <= std::time::SystemTime::now()).then(|| {
            format!(
                "certificate expired at {}",
                strait_ca::time::rfc3339(not_after)
            )
        })
    }
}

pub async fn serve_admin(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &state)).await;
        });
    }
}

/// The value of `key` in a query string.
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `POST /drill/blackhole?region=R&direction=out|in|both&duration=30s` and
/// `POST /drill/end[?id=N]`: (code, body).
fn drill(state: &AdminState, path: &str, query: &str) -> (u16, String) {
    let bad = |m: String| (400, m + "\n");
    match path {
        "/drill/blackhole" => {
            let Some(region) = param(query, "region").filter(|r| !r.is_empty()) else {
                return bad("region= is missing: POST /drill/blackhole?region=R&direction=both&duration=30s".into());
            };
            let direction = match param(query, "direction").unwrap_or("both").parse() {
                Ok(d) => d,
                Err(e) => return bad(format!("direction: {e}")),
            };
            let Some(duration) = param(query, "duration") else {
                return bad("duration= is missing: a drill ends by itself (e.g. duration=30s)".into());
            };
            let duration = match humantime::parse_duration(duration) {
                Ok(d) => d,
                Err(e) => return bad(format!("duration: {duration:?} is not a duration ({e}); write e.g. 30s, 2m")),
            };
            match state.drills.start(region, direction, duration) {
                Ok(hole) => (
                    200,
                    serde_json::json!({
                        "id": hole.id,
                        "kind": "blackhole",
                        "region": hole.region,
                        "direction": hole.direction.as_str(),
                        "duration_ms": duration.as_millis() as u64,
                    })
                    .to_string()
                        + "\n",
                ),
                Err(e) => bad(e.to_string()),
            }
        }
        "/drill/end" => {
            let id = match param(query, "id").map(str::parse::<u64>) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => return bad("id= takes a drill's number from /status".into()),
            };
            match state.drills.end(id) {
                Ok(ended) => (
                    200,
                    serde_json::json!({ "ended": ended.iter().map(|h| h.id).collect::<Vec<_>>() })
                        .to_string()
                        + "\n",
                ),
                Err(e) => (404, e.to_string() + "\n"),
            }
        }
        _ => (
            404,
            "not found: POST /drill/blackhole?region=R&direction=out|in|both&duration=30s or /drill/end[?id=N]\n".into(),
        ),
    }
}

async fn answer(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // A query string only means something to /why; elsewhere it is ignored.
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, ctype, body) = match (method, path) {
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match state.not_ready_because() {
            None => (200, "text/plain", "ready\n".to_owned()),
            Some(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        ("GET", "/status") => (200, "application/json", state.status_json()),
        ("GET", "/why") => {
            let service = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("service="))
                .unwrap_or_default();
            match state.why_json(service) {
                Some(json) => (200, "application/json", json),
                None => (
                    404,
                    "text/plain",
                    format!(
                        "no import of service {service:?} on this gateway: try /why?service=NAME with a name from /status\n"
                    ),
                ),
            }
        }
        ("GET", "/metrics") => match crate::metrics::handle() {
            Some(h) => (
                200,
                "text/plain; version=0.0.4",
                h.render() + &crate::scrape::render(&state.live_metrics()),
            ),
            None => (
                503,
                "text/plain",
                "metrics are not enabled in this process\n".to_owned(),
            ),
        },
        ("POST", p) if p.starts_with("/drill/") => {
            // A drill cuts tunnels: only someone on this host (or in this
            // pod, through kubectl exec or port-forward) may start one.
            let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
            if local {
                let (code, body) = drill(state, p, query);
                (code, "text/plain", body)
            } else {
                (
                    403,
                    "text/plain",
                    "drills are taken only from loopback: run them on the gateway's host or through kubectl exec / port-forward\n".to_owned(),
                )
            }
        }
        ("GET", _) => (
            404,
            "text/plain",
            "not found: try /healthz, /readyz, /status, /why?service=NAME or /metrics\n".to_owned(),
        ),
        _ => (
            405,
            "text/plain",
            "only GET, and POST to /drill/...\n".to_owned(),
        ),
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
