//! Relaying: carrying a stream on for a gateway whose direct path to the
//! region it wants is cut (eu-west -> ap-south -> us-east). The first leg
//! arrives as an OPEN that names the region (`relay_to`); this gateway
//! picks one of its own direct tunnels there, opens the second leg with an
//! OPEN that names itself as the relay and the gateway the stream entered
//! at, passes the answer back unchanged and splices the two streams.
//!
//! One hop at most: a stream that was relayed already is never relayed
//! again, and the second leg never asks for a relay. What the origin may
//! replay stays exactly what the exporting gateway proved: its STATUS is
//! passed back as it came, a refusal here is a STATUS (nothing forwarded),
//! and a second leg lost after its OPEN left resets the first with the
//! ambiguous code, never with `NOT_FORWARDED`.

use std::sync::Arc;

use bytes::BytesMut;
use strait_core::attempt::{Ambiguity, Attempt, AttemptState};
use strait_core::frame::{self, Message, Open, StatusCode};
use strait_core::plane::LOCAL;
use strait_core::trace::TraceContext;
use tokio::time::Instant;

use crate::config::TunnelSettings;
use crate::handle::PlaneHandle;
use crate::metrics as m;
use crate::tunnel::Tunnel;
use crate::wire::{WireError, code, read_frame, refuse, write_frame};

/// This gateway as a relay.
#[derive(Debug, Clone)]
pub struct Relay {
    /// `[gateway] relay`, and not draining.
    pub enabled: bool,
    /// Its SPIFFE ID, named in the second leg's OPEN.
    pub id: String,
    pub region: String,
}

/// Serves an OPEN that asks this gateway to relay. `early` holds the
/// origin's bytes read after the OPEN.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    me: Relay,
    first: Arc<Tunnel>,
    handle: Arc<PlaneHandle>,
    settings: Arc<TunnelSettings>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut early: BytesMut,
    open: Open,
) {
    let started = Instant::now();
    let trace = TraceContext {
        trace_id: open.trace_id,
        span_id: open.span_id,
    };
    let service = open.service.clone();
    let to_region = open.relay_to.clone();
    let region = me.region.clone();
    let from = first.peer.to_string();
    let finished = |outcome: &str, via: &str, up: u64, down: u64| {
        let labels = [
            ("region", region.clone()),
            ("service", service.clone()),
            ("from_region", first.region.clone()),
            ("to_region", to_region.clone()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::counter!(m::RELAYED, &labels).increment(1);
        m::FinishedStream {
            region: &region,
            side: "relay",
            service: &service,
            peer: via,
            outcome,
            bytes_in: up,
            bytes_out: down,
            duration: started.elapsed(),
        }
        .record();
    };
    let refusal = if !me.enabled {
        Some((
            StatusCode::Forbidden,
            "this gateway does not relay".to_owned(),
        ))
    } else if !open.relayed_by.is_empty() {
        Some((
            StatusCode::Forbidden,
            "a relayed stream is not relayed again".to_owned(),
        ))
    } else {
        None
    };
    if let Some((code_, message)) = refusal {
        tracing::warn!(%trace, %service, peer = %from, to = %to_region, outcome = %code_, "relay refused: {message}");
        finished("refused", "-", 0, 0);
        refuse(&mut send, &mut recv, code_, message).await;
        return;
    }

    // One of our own direct tunnels to the region asked for.
    let prefer = [to_region.clone()];
    let (decision, tunnel) = handle.route(
        &service,
        &prefer,
        &[LOCAL.to_owned()],
        crate::handle::coins(),
    );
    let second = tunnel.filter(|t| decision.relay_to.is_none() && t.region == to_region);
    let Some(second) = second else {
        let message = format!("no working tunnel to {service} in {to_region}");
        tracing::warn!(%trace, %service, peer = %from, to = %to_region, "relay refused: {message}");
        finished("no_route", "-", 0, 0);
        refuse(&mut send, &mut recv, StatusCode::NoSuchService, message).await;
        return;
    };
    let via = second.peer.to_string();
    let _second_leg = handle.track_stream(second.id);
    let mut a = Attempt::new();
    let (mut up_send, mut up_recv) = match second.conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            handle.attempt(second.id, &service, &prefer, a.handle_open_failed());
            finished("refused", &via, 0, 0);
            let message = format!("cannot open a stream to {via}: {e}");
            refuse(&mut send, &mut recv, StatusCode::TargetUnreachable, message).await;
            return;
        }
    };
    let onward = Message::Open(Open {
        relay_to: String::new(),
        relayed_by: me.id.clone(),
        origin_gateway: from.clone(),
        ..open
    });
    let mut head = BytesMut::new();
    if frame::encode(&onward, &mut head).is_err() {
        finished("refused", &via, 0, 0);
        refuse(
            &mut send,
            &mut recv,
            StatusCode::TargetUnreachable,
            "OPEN too large".into(),
        )
        .await;
        return;
    }
    let early_len = early.len() as u64;
    head.extend_from_slice(&early.split());
    a.handle_sent();
    tracing::info!(%trace, %service, peer = %from, via = %via, to = %to_region, "stream relaying");
    let answer = match up_send.write_all(&head).await {
        Err(e) => Err(format!("sending OPEN: {e}")),
        Ok(()) => {
            let mut buf = BytesMut::new();
            match read_frame(&mut up_recv, &mut buf, settings.open_timeout).await {
                Ok(Message::Status(s)) => Ok((s, buf)),
                Ok(other) => Err(format!("expected STATUS, got {other:?}")),
                Err(WireError::Read(quinn::ReadError::Reset(c)))
                    if code::proves_not_forwarded(c) =>
                {
                    // The exporter proved it forwarded nothing: so do we.
                    handle.attempt(second.id, &service, &prefer, a.handle_reset(true));
                    finished("refused", &via, 0, 0);
                    let _ = send.reset(code::NOT_FORWARDED);
                    let _ = recv.stop(code::NOT_FORWARDED);
                    return;
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let (status, leftover) = match answer {
        Ok(found) => found,
        Err(reason) => {
            // The OPEN may have reached the target: the origin must not
            // take this for a refusal.
            handle.attempt(
                second.id,
                &service,
                &prefer,
                a.handle_ambiguous(Ambiguity::TunnelDown),
            );
            tracing::warn!(%trace, %service, peer = %from, via = %via, "relayed stream lost before its answer: {reason}");
            finished("ambiguous", &via, early_len, 0);
            let _ = up_send.reset(code::RESET);
            let _ = send.reset(code::RESET);
            let _ = recv.stop(code::RESET);
            return;
        }
    };
    let state: AttemptState = a.handle_status(status.code);
    handle.attempt(second.id, &service, &prefer, state);
    if status.code != StatusCode::Ok {
        tracing::warn!(%trace, %service, peer = %from, via = %via, outcome = %status.code, "relayed stream refused by the exporter");
        finished("refused", &via, 0, 0);
        let _ = up_recv.stop(code::REFUSED);
        refuse(&mut send, &mut recv, status.code, status.message).await;
        return;
    }
    if write_frame(&mut send, &Message::Status(status))
        .await
        .is_err()
    {
        let _ = up_send.reset(code::RESET);
        finished("reset", &via, early_len, 0);
        return;
    }
    let moved = crate::splice::run(
        &mut recv,
        &mut send,
        &mut up_send,
        &mut up_recv,
        crate::splice::SpliceOptions {
            first_to_quic: &[],
            first_to_tcp: &leftover,
            tcp_finished: false,
            idle_timeout: settings.stream_idle_timeout,
            first_byte: crate::splice::FirstByte::default(),
        },
    )
    .await;
    if moved.reset {
        let _ = send.reset(code::RESET);
        let _ = recv.stop(code::RESET);
    }
    let outcome = moved.outcome();
    let up = moved.tcp_to_quic + early_len;
    finished(outcome, &via, up, moved.quic_to_tcp);
    tracing::info!(
        %trace, %service, peer = %from, via = %via, to = %to_region,
        bytes_up = up, bytes_down = moved.quic_to_tcp,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome,
        "stream closed (relay)"
    );
}
