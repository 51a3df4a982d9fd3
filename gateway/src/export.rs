//! The exporting side of a service stream: read OPEN, decide (known
//! service, allowed peer, not draining), dial the target, answer with a
//! status, splice. A refusal answers the stream and never touches the
//! tunnel. Whatever fails before the target is connected says so (a status,
//! or the `NOT_FORWARDED` reset code), because that proof is what lets the
//! importing side replay a request elsewhere without delivering it twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use strait_ca::IdentityKind;
use strait_core::frame::{Message, Open, Status, StatusCode};
use strait_core::policy::{ExportPolicy, Requester};
use strait_core::target::TargetHealth;
use strait_core::trace::TraceContext;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{ExportConfig, TunnelSettings};
use crate::handle::PlaneHandle;
use crate::metrics as m;
use crate::note::{Note, NoteSender};
use crate::tunnel::Tunnel;
use crate::wire::{code, read_frame, refuse, write_frame};

/// The exports of this gateway, with compiled allow patterns. The set can
/// be replaced at run time (configuration reload); each stream works on the
/// set in force when it started.
#[derive(Debug)]
pub struct Exports {
    services: RwLock<Arc<Vec<Arc<Export>>>>,
    trust_domain: String,
    region: String,
    /// Set when the gateway drains: new streams are refused with DRAINING.
    draining: AtomicBool,
    /// Whether this gateway relays streams for peers (`[gateway] relay`).
    relay: AtomicBool,
    /// This gateway's SPIFFE ID, named in the OPEN of streams it relays.
    id: std::sync::OnceLock<String>,
}

#[derive(Debug)]
struct Export {
    config: ExportConfig,
    policy: ExportPolicy,
    /// Last verdict of the target check; starts healthy.
    healthy: AtomicBool,
    target: Mutex<TargetHealth>,
    admission: crate::admission::Admission,
}

/// Builds a set of exports, reusing the live state of those whose
/// configuration is unchanged in `previous`.
/// The allow patterns of `config` that name another trust domain than
/// `trust_domain`: no peer or workload this gateway accepts carries one, so
/// they never match (a typo, or a pattern copied from another mesh).
pub fn foreign_patterns<'a>(config: &'a ExportConfig, trust_domain: &str) -> Vec<&'a str> {
    config
        .allow
        .iter()
        .chain(&config.allow_workloads)
        .map(String::as_str)
        .filter(|p| {
            let domain = p
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            !domain.contains('*') && domain != trust_domain
        })
        .collect()
}

fn build(
    configs: &[ExportConfig],
    previous: &[Arc<Export>],
    trust_domain: &str,
) -> Vec<Arc<Export>> {
    configs
        .iter()
        .map(|c| {
            previous
                .iter()
                .find(|e| &e.config == c)
                .cloned()
                .unwrap_or_else(|| {
                    for pattern in foreign_patterns(c, trust_domain) {
                        tracing::warn!(service = %c.service, %pattern,
                            "allow pattern of another trust domain than {trust_domain}; it never matches");
                    }
                    Arc::new(Export {
                        config: c.clone(),
                        policy: ExportPolicy::new(trust_domain, &c.allow, &c.allow_workloads),
                        healthy: AtomicBool::new(true),
                        target: Mutex::new(TargetHealth::default()),
                        admission: crate::admission::Admission::new(&c.limits),
                    })
                })
        })
        .collect()
}

impl Exports {
    pub fn new(configs: &[ExportConfig], trust_domain: &str, region: &str) -> Self {
        Exports {
            services: RwLock::new(Arc::new(build(configs, &[], trust_domain))),
            trust_domain: trust_domain.to_owned(),
            region: region.to_owned(),
            draining: AtomicBool::new(false),
            relay: AtomicBool::new(true),
            id: std::sync::OnceLock::new(),
        }
    }

    /// Sets this gateway's SPIFFE ID (once, at start).
    pub fn set_id(&self, id: &str) {
        let _ = self.id.set(id.to_owned());
    }

    pub fn id(&self) -> &str {
        self.id.get().map(String::as_str).unwrap_or("")
    }

    pub fn set_relay(&self, relay: bool) {
        self.relay.store(relay, Ordering::SeqCst);
    }

    /// Whether streams of other gateways are relayed (and offered as such).
    pub fn relays(&self) -> bool {
        self.relay.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn current(&self) -> Arc<Vec<Arc<Export>>> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the set. Exports whose configuration did not change keep
    /// their state (target health, limits in use); streams already open
    /// finish on the set they started with.
    pub fn replace(&self, configs: &[ExportConfig]) {
        let mut guard = self.services.write().unwrap_or_else(|p| p.into_inner());
        let next = build(configs, &guard, &self.trust_domain);
        *guard = Arc::new(next);
    }

    /// From now on every new stream is refused with DRAINING: proof for
    /// the importing side that nothing was forwarded.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn names(&self) -> Vec<String> {
        self.current()
            .iter()
            .map(|e| e.config.service.clone())
            .collect()
    }

    pub fn ads(&self) -> Vec<strait_core::frame::ServiceAd> {
        self.current()
            .iter()
            .map(|e| strait_core::frame::ServiceAd {
                name: e.config.service.clone(),
                healthy: e.healthy.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Checks every target with a TCP connect each `interval`; when a
    /// verdict changes (with the hysteresis of `strait_core::target`),
    /// tells every peer with an UPDATE, so a service whose target died fails
    /// over on its own while the tunnel stays up.
    pub async fn check_targets(
        self: Arc<Self>,
        handle: Arc<PlaneHandle>,
        notes: NoteSender,
        interval: Duration,
        timeout: Duration,
    ) {
        loop {
            let mut changed = false;
            let services = self.current();
            for e in services.iter() {
                let ok = matches!(
                    tokio::time::timeout(timeout, TcpStream::connect(&e.config.target)).await,
                    Ok(Ok(_))
                );
                let verdict = e
                    .target
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handle_check(ok);
                let healthy = e.target.lock().unwrap_or_else(|p| p.into_inner()).healthy();
                let labels = [
                    ("region", self.region.clone()),
                    ("service", e.config.service.clone()),
                ];
                metrics::gauge!(crate::metrics::TARGET_UP, &labels).set(if healthy {
                    1.0
                } else {
                    0.0
                });
                if let Some(healthy) = verdict {
                    e.healthy.store(healthy, Ordering::SeqCst);
                    changed = true;
                    let _ = notes.send(Note::TargetHealth {
                        service: e.config.service.clone(),
                        target: e.config.target.clone(),
                        healthy,
                    });
                }
            }
            if changed {
                let update = Message::Update(strait_core::frame::Update {
                    services: self.ads(),
                });
                for t in handle.tunnels() {
                    t.send_control(&update).await;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Admits a stream for `service` under its limits.
    async fn admit(
        &self,
        service: &str,
    ) -> Result<Option<crate::admission::Admitted>, crate::admission::Refusal> {
        let services = self.current();
        match services.iter().find(|e| e.config.service == service) {
            Some(e) => e.admission.admit(None).await.map(Some),
            None => Ok(None),
        }
    }

    /// The export for `service` if `who` may open it; `relayed`: the
    /// stream comes through a gateway of a third region, and `who` is the
    /// gateway it entered the mesh at.
    fn decide(
        &self,
        service: &str,
        who: Requester<'_>,
        relayed: bool,
    ) -> Result<ExportConfig, StatusCode> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(StatusCode::Draining);
        }
        let services = self.current();
        let export = services
            .iter()
            .find(|e| e.config.service == service)
            .ok_or(StatusCode::NoSuchService)?;
        if relayed && !export.config.accept_relayed {
            return Err(StatusCode::Forbidden);
        }
        export.policy.decide(who)?;
        Ok(export.config.clone())
    }
}

/// Serves one incoming stream on `tunnel`.
pub async fn serve_stream(
    tunnel: Arc<Tunnel>,
    handle: Arc<PlaneHandle>,
    exports: Arc<Exports>,
    settings: Arc<TunnelSettings>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let started = Instant::now();
    let _active = handle.track_stream(tunnel.id);
    let region = exports.region.clone();
    let finished = |service: &str, outcome: &str, bytes_in: u64, bytes_out: u64| {
        m::FinishedStream {
            region: &region,
            side: "export",
            service,
            peer: &tunnel.peer.to_string(),
            outcome,
            bytes_in,
            bytes_out,
            duration: started.elapsed(),
        }
        .record();
    };
    let mut buf = BytesMut::new();
    let open = match read_frame(&mut recv, &mut buf, settings.open_timeout).await {
        Ok(Message::Open(open)) => open,
        Ok(other) => {
            tracing::warn!(peer = %tunnel.peer, "stream did not start with OPEN ({other:?}); resetting it");
            finished("-", "protocol_error", 0, 0);
            let _ = send.reset(code::NOT_FORWARDED);
            let _ = recv.stop(code::NOT_FORWARDED);
            return;
        }
        Err(e) => {
            tracing::warn!(peer = %tunnel.peer, "bad stream start: {e}; resetting it");
            finished("-", "protocol_error", 0, 0);
            let _ = send.reset(code::NOT_FORWARDED);
            let _ = recv.stop(code::NOT_FORWARDED);
            return;
        }
    };
    if !open.relay_to.is_empty() {
        let me = crate::relay::Relay {
            enabled: exports.relays(),
            id: exports.id().to_owned(),
            region: exports.region().to_owned(),
        };
        // Boxed: a relayed stream's state would otherwise be reserved in
        // every stream's task, relayed or not.
        Box::pin(crate::relay::serve(
            me,
            tunnel.clone(),
            handle,
            settings,
            send,
            recv,
            buf,
            open,
        ))
        .await;
        return;
    }
    let Open {
        service,
        trace_id,
        span_id,
        origin,
        relayed_by,
        origin_gateway,
        ..
    } = open;
    let trace = TraceContext { trace_id, span_id };
    let peer = if relayed_by.is_empty() {
        tunnel.peer.to_string()
    } else {
        format!("{origin_gateway} via {}", tunnel.peer)
    };
    let _active_service = m::ActiveStream::new(&region, "export", &service);
    // A relayed stream is judged as coming from the gateway it entered the
    // mesh at (the relay is a gateway of our trust domain, trusted to say
    // so); one that names no such gateway of our trust domain is refused.
    let entered = if relayed_by.is_empty() {
        Some(tunnel.peer.clone())
    } else {
        strait_ca::SpiffeId::parse(&origin_gateway)
            .ok()
            .filter(|id| id.trust_domain() == tunnel.peer.trust_domain())
    };
    let decided = match &entered {
        Some(id) => {
            let text = id.to_string();
            let who = Requester {
                id: &text,
                trust_domain: id.trust_domain().as_str(),
                is_gateway: matches!(id.kind(), IdentityKind::Gateway { .. }),
                origin: origin.as_deref(),
            };
            exports.decide(&service, who, !relayed_by.is_empty())
        }
        None => Err(StatusCode::Forbidden),
    };
    let export = match decided {
        Ok(e) => e.clone(),
        Err(code_) => {
            // Logs name outcomes as the metrics label them.
            let outcome = code_.as_str().to_ascii_lowercase();
            finished(&service, &outcome, 0, 0);
            tracing::warn!(%trace, %service, %peer, origin = origin.as_deref().unwrap_or("-"), outcome, "stream refused");
            refuse(
                &mut send,
                &mut recv,
                code_,
                format!("{code_} for {service}"),
            )
            .await;
            return;
        }
    };
    let _permit = match exports.admit(&service).await {
        Ok(permit) => permit,
        Err(refusal) => {
            finished(&service, "overloaded", 0, 0);
            tracing::warn!(%trace, %service, %peer, outcome = "overloaded", reason = refusal.as_str(), "stream refused by the export's limits");
            refuse(
                &mut send,
                &mut recv,
                StatusCode::Overloaded,
                refusal.as_str().to_owned(),
            )
            .await;
            return;
        }
    };
    let target = match tokio::time::timeout(
        settings.connect_timeout,
        TcpStream::connect(&export.target),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            finished(&service, "target_unreachable", 0, 0);
            tracing::warn!(%trace, %service, %peer, target = %export.target, outcome = "target_unreachable", "cannot reach target: {e}");
            refuse(
                &mut send,
                &mut recv,
                StatusCode::TargetUnreachable,
                e.to_string(),
            )
            .await;
            return;
        }
        Err(_) => {
            finished(&service, "target_unreachable", 0, 0);
            tracing::warn!(%trace, %service, %peer, target = %export.target, outcome = "target_unreachable", "target connect timed out");
            refuse(
                &mut send,
                &mut recv,
                StatusCode::TargetUnreachable,
                "connect timed out".into(),
            )
            .await;
            return;
        }
    };
    let _ = target.set_nodelay(true);
    let ok = Message::Status(Status {
        code: StatusCode::Ok,
        message: String::new(),
    });
    if write_frame(&mut send, &ok).await.is_err() {
        finished(&service, "reset", 0, 0);
        return;
    }
    tracing::info!(%trace, %service, %peer, origin = origin.as_deref().unwrap_or("-"), "stream open (export)");
    // Exactly the early bytes, not the read buffer's spare room, for as
    // long as the stream lives.
    let early = bytes::Bytes::copy_from_slice(&buf);
    drop(buf);
    let moved = crate::splice::splice(
        target,
        send,
        recv,
        crate::splice::SpliceOptions {
            first_to_quic: &[],
            first_to_tcp: &early,
            tcp_finished: false,
            idle_timeout: settings.stream_idle_timeout,
            first_byte: crate::splice::FirstByte::default(),
        },
    )
    .await;
    let outcome = moved.outcome();
    // In: towards this gateway's target (out of the tunnel); out: into it.
    finished(&service, outcome, moved.quic_to_tcp, moved.tcp_to_quic);
    tracing::info!(
        %trace, %service, %peer,
        bytes_in = moved.quic_to_tcp, bytes_out = moved.tcp_to_quic,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome,
        "stream closed (export)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports() -> Exports {
        Exports::new(
            &[
                ExportConfig {
                    service: "open".into(),
                    target: "127.0.0.1:1".into(),
                    allow: vec![],
                    allow_workloads: vec![],
                    limits: Default::default(),
                    accept_relayed: true,
                },
                ExportConfig {
                    service: "east-only".into(),
                    target: "127.0.0.1:1".into(),
                    allow: vec!["spiffe://example.org/region/us-east/gateway/*".into()],
                    allow_workloads: vec![],
                    limits: Default::default(),
                    accept_relayed: true,
                },
            ],
            "example.org",
            "eu-west",
        )
    }

    #[test]
    fn an_export_may_refuse_relayed_streams() {
        let e = exports();
        let west = gateway("spiffe://example.org/region/eu-west/gateway/gw-1");
        let text = west.to_string();
        let who = Requester {
            id: &text,
            trust_domain: west.trust_domain().as_str(),
            is_gateway: true,
            origin: None,
        };
        assert!(e.decide("open", who, true).is_ok());
        e.replace(&[ExportConfig {
            accept_relayed: false,
            ..e.current()[0].config.clone()
        }]);
        assert_eq!(
            e.decide("open", who, true).unwrap_err(),
            StatusCode::Forbidden
        );
        assert!(e.decide("open", who, false).is_ok());
        // A gateway that does not relay, or drains, offers no relay.
        assert!(e.relays());
        e.set_relay(false);
        assert!(!e.relays());
    }

    #[test]
    fn patterns_of_other_trust_domains_are_found() {
        let config = ExportConfig {
            service: "s".into(),
            target: "127.0.0.1:1".into(),
            allow: vec![
                "spiffe://example.org/region/*".into(),
                "spiffe://exmaple.org/region/*".into(),
                "spiffe://*/region/*".into(),
            ],
            allow_workloads: vec!["spiffe://other.org/ns/a/sa/*".into()],
            limits: Default::default(),
            accept_relayed: true,
        };
        assert_eq!(
            foreign_patterns(&config, "example.org"),
            [
                "spiffe://exmaple.org/region/*",
                "spiffe://other.org/ns/a/sa/*"
            ]
        );
    }

    fn gateway(id: &str) -> strait_ca::SpiffeId {
        strait_ca::SpiffeId::parse(id).unwrap()
    }

    fn ask(
        id: &strait_ca::SpiffeId,
        e: &Exports,
        service: &str,
    ) -> Result<ExportConfig, StatusCode> {
        let text = id.to_string();
        let who = Requester {
            id: &text,
            trust_domain: id.trust_domain().as_str(),
            is_gateway: matches!(id.kind(), IdentityKind::Gateway { .. }),
            origin: None,
        };
        e.decide(service, who, false)
    }

    #[test]
    fn decides_by_service_and_pattern_and_refuses_while_draining() {
        let e = exports();
        let east = gateway("spiffe://example.org/region/us-east/gateway/gw-2");
        let west = gateway("spiffe://example.org/region/eu-west/gateway/gw-1");
        assert!(ask(&west, &e, "open").is_ok());
        assert!(ask(&east, &e, "east-only").is_ok());
        assert_eq!(
            ask(&west, &e, "east-only").unwrap_err(),
            StatusCode::Forbidden
        );
        assert_eq!(
            ask(&east, &e, "nope").unwrap_err(),
            StatusCode::NoSuchService
        );
        let other = gateway("spiffe://other.org/region/x/gateway/y");
        assert_eq!(ask(&other, &e, "open").unwrap_err(), StatusCode::Forbidden);
        e.set_draining();
        assert_eq!(
            ask(&east, &e, "east-only").unwrap_err(),
            StatusCode::Draining
        );
    }
}
