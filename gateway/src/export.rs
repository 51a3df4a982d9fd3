//! The exporting side of a service stream: read OPEN, decide (known
//! service, allowed peer), dial the target, answer with a status, splice.
//! A refusal answers the stream and never touches the tunnel.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use strait_core::frame::{Message, Open, Status, StatusCode};
use strait_core::trace::TraceContext;
use tokio::net::TcpStream;
use wildmatch::WildMatch;

use crate::config::{ExportConfig, TunnelSettings};
use crate::metrics as m;
use crate::tunnel::{Registry, Tunnel};
use crate::wire::{code, read_frame, write_frame};

/// The exports of this gateway, with compiled allow patterns. The set can
/// be replaced at run time (configuration reload); each stream works on the
/// set in force when it started.
#[derive(Debug)]
pub struct Exports {
    services: RwLock<Arc<Vec<Arc<Export>>>>,
    trust_domain: String,
    region: String,
}

#[derive(Debug)]
struct Export {
    config: ExportConfig,
    allow: Vec<WildMatch>,
    allow_workloads: Vec<WildMatch>,
    /// Last verdict of the target check; starts healthy.
    healthy: AtomicBool,
    admission: crate::admission::Admission,
    failures: AtomicU32,
}

/// Consecutive failed connects before a target counts as down; one
/// success brings it back.
const TARGET_DOWN_AFTER: u32 = 2;

/// Builds a set of exports, reusing the live state of those whose
/// configuration is unchanged in `previous`.
fn build(configs: &[ExportConfig], previous: &[Arc<Export>]) -> Vec<Arc<Export>> {
    configs
        .iter()
        .map(|c| {
            previous
                .iter()
                .find(|e| &e.config == c)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Export {
                        config: c.clone(),
                        allow: c.allow.iter().map(|p| WildMatch::new(p)).collect(),
                        allow_workloads: c
                            .allow_workloads
                            .iter()
                            .map(|p| WildMatch::new(p))
                            .collect(),
                        healthy: AtomicBool::new(true),
                        admission: crate::admission::Admission::new(&c.limits),
                        failures: AtomicU32::new(0),
                    })
                })
        })
        .collect()
}

impl Exports {
    pub fn new(configs: &[ExportConfig], trust_domain: &str, region: &str) -> Self {
        Exports {
            services: RwLock::new(Arc::new(build(configs, &[]))),
            trust_domain: trust_domain.to_owned(),
            region: region.to_owned(),
        }
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
        let next = build(configs, &guard);
        *guard = Arc::new(next);
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
    /// verdict changes, tells every peer with an UPDATE, so a service whose
    /// target died fails over on its own while the tunnel stays up.
    pub async fn check_targets(
        self: Arc<Self>,
        registry: Arc<Registry>,
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
                let failures = if ok {
                    e.failures.store(0, Ordering::SeqCst);
                    0
                } else {
                    e.failures.fetch_add(1, Ordering::SeqCst) + 1
                };
                let healthy = ok || failures < TARGET_DOWN_AFTER;
                let labels = [
                    ("region", self.region.clone()),
                    ("service", e.config.service.clone()),
                ];
                metrics::gauge!(crate::metrics::TARGET_UP, &labels).set(if healthy {
                    1.0
                } else {
                    0.0
                });
                if e.healthy.swap(healthy, Ordering::SeqCst) != healthy {
                    changed = true;
                    if healthy {
                        registry.events.record(
                            "target_up",
                            format!("{} at {}", e.config.service, e.config.target),
                        );
                        tracing::info!(service = %e.config.service, target = %e.config.target, "target healthy again");
                    } else {
                        registry.events.record(
                            "target_down",
                            format!("{} at {}", e.config.service, e.config.target),
                        );
                        tracing::warn!(service = %e.config.service, target = %e.config.target, "target unreachable; telling peers");
                    }
                }
            }
            if changed {
                let update = Message::Update(strait_core::frame::Update {
                    services: self.ads(),
                });
                for t in registry.tunnels() {
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
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, crate::admission::Refusal> {
        let services = self.current();
        match services.iter().find(|e| e.config.service == service) {
            Some(e) => e.admission.admit().await,
            None => Ok(None),
        }
    }

    /// The export for `service` if `peer` may open it.
    fn decide(
        &self,
        service: &str,
        peer: &str,
        origin: Option<&str>,
    ) -> Result<ExportConfig, StatusCode> {
        let services = self.current();
        let export = services
            .iter()
            .find(|e| e.config.service == service)
            .ok_or(StatusCode::NoSuchService)?;
        let allowed = if export.allow.is_empty() {
            // Default: any gateway of our trust domain (the handshake
            // already required a gateway of it).
            peer.starts_with(&format!("spiffe://{}/region/", self.trust_domain))
        } else {
            export.allow.iter().any(|p| p.matches(peer))
        };
        // Origin workloads, when the export names them, must be known and
        // match: the importing gateway vouches for them with workload mTLS.
        let allowed = allowed
            && (export.allow_workloads.is_empty()
                || origin.is_some_and(|o| export.allow_workloads.iter().any(|p| p.matches(o))));
        if allowed {
            Ok(export.config.clone())
        } else {
            Err(StatusCode::Forbidden)
        }
    }
}

/// Serves one incoming stream on `tunnel`.
pub async fn serve_stream(
    tunnel: Arc<Tunnel>,
    exports: Arc<Exports>,
    settings: Arc<TunnelSettings>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let started = Instant::now();
    let _active = tunnel.track_stream();
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
            let _ = send.reset(code::PROTOCOL);
            let _ = recv.stop(code::PROTOCOL);
            return;
        }
        Err(e) => {
            tracing::warn!(peer = %tunnel.peer, "bad stream start: {e}; resetting it");
            finished("-", "protocol_error", 0, 0);
            let _ = send.reset(code::PROTOCOL);
            let _ = recv.stop(code::PROTOCOL);
            return;
        }
    };
    let Open {
        service,
        trace_id,
        span_id,
        origin,
    } = open;
    let trace = TraceContext { trace_id, span_id };
    let peer = tunnel.peer.to_string();
    let _active_service = m::ActiveStream::new(&region, "export", &service);
    let export = match exports.decide(&service, &peer, origin.as_deref()) {
        Ok(e) => e.clone(),
        Err(code_) => {
            finished(&service, &code_.as_str().to_ascii_lowercase(), 0, 0);
            tracing::warn!(%trace, %service, %peer, origin = origin.as_deref().unwrap_or("-"), outcome = %code_, "stream refused");
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
            tracing::warn!(%trace, %service, %peer, outcome = "OVERLOADED", reason = refusal.as_str(), "stream refused by the export's limits");
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
            tracing::warn!(%trace, %service, %peer, target = %export.target, outcome = "TARGET_UNREACHABLE", "cannot reach target: {e}");
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
            tracing::warn!(%trace, %service, %peer, target = %export.target, outcome = "TARGET_UNREACHABLE", "target connect timed out");
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
        return;
    }
    tracing::info!(%trace, %service, %peer, origin = origin.as_deref().unwrap_or("-"), "stream open (export)");
    let early = buf.split().freeze();
    let moved = crate::splice::splice(
        target,
        send,
        recv,
        crate::splice::SpliceOptions {
            first_to_quic: &[],
            first_to_tcp: &early,
            tcp_finished: false,
            idle_timeout: settings.stream_idle_timeout,
        },
    )
    .await;
    let outcome = match (moved.idle, moved.reset) {
        (true, _) => "idle",
        (false, true) => "reset",
        (false, false) => "ok",
    };
    finished(&service, outcome, moved.tcp_to_quic, moved.quic_to_tcp);
    tracing::info!(
        %trace, %service, %peer,
        bytes_in = moved.quic_to_tcp, bytes_out = moved.tcp_to_quic,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome,
        "stream closed (export)"
    );
}

async fn refuse(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    code_: StatusCode,
    message: String,
) {
    let _ = write_frame(
        send,
        &Message::Status(Status {
            code: code_,
            message,
        }),
    )
    .await;
    let _ = send.finish();
    let _ = recv.stop(code::REFUSED);
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
                },
                ExportConfig {
                    service: "east-only".into(),
                    target: "127.0.0.1:1".into(),
                    allow: vec!["spiffe://example.org/region/us-east/gateway/*".into()],
                    allow_workloads: vec![],
                    limits: Default::default(),
                },
            ],
            "example.org",
            "eu-west",
        )
    }

    #[test]
    fn decides_by_service_and_pattern() {
        let e = exports();
        let east = "spiffe://example.org/region/us-east/gateway/gw-2";
        let west = "spiffe://example.org/region/eu-west/gateway/gw-1";
        assert!(e.decide("open", west, None).is_ok());
        assert!(e.decide("east-only", east, None).is_ok());
        assert_eq!(
            e.decide("east-only", west, None).unwrap_err(),
            StatusCode::Forbidden
        );
        assert_eq!(
            e.decide("nope", east, None).unwrap_err(),
            StatusCode::NoSuchService
        );
        assert_eq!(
            e.decide("open", "spiffe://other.org/region/x/gateway/y", None)
                .unwrap_err(),
            StatusCode::Forbidden
        );
    }
}
