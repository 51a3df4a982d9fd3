//! The importing side: a TCP listener per import; each client connection
//! becomes a service stream on a tunnel whose peer offers the service. The
//! OPEN frame and the client's first bytes leave at once, without waiting
//! for the answer: a new connection costs one round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rand::RngCore;
use strait_core::frame::{self, Message, Open, StatusCode};
use strait_core::trace::TraceContext;
use tokio::net::{TcpListener, TcpStream};

use crate::config::TunnelSettings;
use crate::splice::{End, quic_to_tcp, reset_tcp, tcp_to_quic};
use crate::tunnel::Registry;
use crate::wire::{code, read_frame};

/// Where an import's streams may go.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: String,
    pub prefer: Vec<String>,
    pub own_region: String,
}

/// Accepts clients of one import until the listener is dropped.
pub async fn run_import(
    listener: TcpListener,
    route: Route,
    registry: Arc<Registry>,
    settings: Arc<TunnelSettings>,
) {
    let route = Arc::new(route);
    loop {
        let (client, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %route.service, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(serve_client(
            client,
            from,
            route.clone(),
            registry.clone(),
            settings.clone(),
        ));
    }
}

fn new_trace() -> TraceContext {
    let mut rng = rand::rng();
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    rng.fill_bytes(&mut trace_id);
    rng.fill_bytes(&mut span_id);
    TraceContext::from_random(trace_id, span_id)
}

async fn serve_client(
    client: TcpStream,
    from: SocketAddr,
    route: Arc<Route>,
    registry: Arc<Registry>,
    settings: Arc<TunnelSettings>,
) {
    let started = Instant::now();
    let trace = new_trace();
    let service = route.service.clone();
    let Some(tunnel) = registry.pick(&service, &route.prefer, &route.own_region) else {
        tracing::warn!(%trace, %service, client = %from, outcome = "no_peer", "no tunnel offers the service; closing the client");
        let (r, w) = client.into_split();
        reset_tcp(r, w);
        return;
    };
    let peer = tunnel.peer.to_string();
    let _active = tunnel.track_stream();
    let (mut send, mut recv) = match tunnel.conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%trace, %service, %peer, outcome = "tunnel_error", "cannot open a stream: {e}");
            let (r, w) = client.into_split();
            reset_tcp(r, w);
            return;
        }
    };
    let mut open = BytesMut::new();
    let msg = Message::Open(Open {
        service: service.clone(),
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        origin: None,
    });
    if frame::encode(&msg, &mut open).is_err() || send.write_all(&open).await.is_err() {
        let (r, w) = client.into_split();
        reset_tcp(r, w);
        return;
    }
    tracing::debug!(%trace, %service, %peer, client = %from, "stream opening");

    let (mut cr, mut cw) = client.into_split();
    let (stop_up, stop_down) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    // Client bytes flow at once; the answer is read alongside.
    let up = async {
        let r = tokio::select! {
            r = tcp_to_quic(&mut cr, &mut send, &[]) => r,
            _ = stop_up.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_down.notify_one();
        }
        r
    };
    let down = async {
        let mut buf = BytesMut::new();
        let status = tokio::select! {
            s = read_frame(&mut recv, &mut buf, settings.open_timeout) => s,
            _ = stop_down.notified() => return Err(None),
        };
        let status = match status {
            Ok(Message::Status(s)) => s,
            Ok(other) => {
                tracing::warn!(%trace, %service, %peer, "expected STATUS, got {other:?}");
                stop_up.notify_one();
                return Err(None);
            }
            Err(e) => {
                stop_up.notify_one();
                return Err(Some(e.to_string()));
            }
        };
        if status.code != StatusCode::Ok {
            stop_up.notify_one();
            return Err(Some(format!("{}: {}", status.code, status.message)));
        }
        let early = buf.split().freeze();
        let r = tokio::select! {
            r = quic_to_tcp(&mut recv, &mut cw, &early) => r,
            _ = stop_down.notified() => (End::Reset, 0),
        };
        if r.0 == End::Reset {
            stop_up.notify_one();
        }
        Ok(r)
    };
    let ((up_end, up_bytes), down) = tokio::join!(up, down);
    match down {
        Ok((down_end, down_bytes)) => {
            let reset = up_end == End::Reset || down_end == End::Reset;
            if reset {
                let _ = send.reset(code::RESET);
                let _ = recv.stop(code::RESET);
                reset_tcp(cr, cw);
            }
            tracing::info!(
                %trace, %service, %peer,
                bytes_out = up_bytes, bytes_in = down_bytes,
                duration_ms = started.elapsed().as_millis() as u64,
                outcome = if reset { "reset" } else { "ok" },
                "stream closed (import)"
            );
        }
        Err(reason) => {
            let _ = send.reset(code::RESET);
            let _ = recv.stop(code::RESET);
            reset_tcp(cr, cw);
            tracing::warn!(
                %trace, %service, %peer,
                outcome = "refused",
                reason = reason.as_deref().unwrap_or("stream reset"),
                "stream refused"
            );
        }
    }
}
