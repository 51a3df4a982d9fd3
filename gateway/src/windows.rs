//! Keeps a tunnel's connection windows at a multiple of its measured
//! bandwidth-delay product, inside the per-connection budget
//! (`[tunnel] window_budget`). The decision is `strait_core::window`'s;
//! this task only samples quinn's RTT and byte counters and applies the
//! answer. It never touches stream windows: quinn fixes those when a
//! stream opens, and they are what bounds one slow reader.

use std::time::Duration;

use quinn::VarInt;
use strait_core::window::{WindowPolicy, WindowSizer, rate};

use crate::config::TunnelSettings;

/// How often the windows are reconsidered.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The policy for tunnels with `settings`: the configured connection
/// window is the floor, `window_budget` the ceiling.
pub fn policy(settings: &TunnelSettings) -> WindowPolicy {
    WindowPolicy {
        floor: settings.connection_window,
        budget: settings.window_budget.max(settings.connection_window),
        headroom: 2,
    }
}

/// Follows `conn`'s path until it closes. Spawn one per connection:
/// `tokio::spawn(crate::windows::follow_path(conn.clone(), crate::windows::policy(&settings)))`.
pub async fn follow_path(conn: quinn::Connection, policy: WindowPolicy) {
    let mut receive = WindowSizer::default();
    let mut send = WindowSizer::default();
    let mut last = conn.stats();
    let mut last_at = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tick.tick() => {}
        }
        let stats = conn.stats();
        let now = tokio::time::Instant::now();
        let dt = now - last_at;
        let rtt = conn.rtt();
        let rx = rate(last.udp_rx.bytes, stats.udp_rx.bytes, dt);
        let tx = rate(last.udp_tx.bytes, stats.udp_tx.bytes, dt);
        if let Some(w) = receive.sample(&policy, rtt, rx) {
            conn.set_receive_window(VarInt::from_u64(w).unwrap_or(VarInt::MAX));
            tracing::debug!(window = w, ?rtt, rate = rx, "connection receive window");
        }
        if let Some(w) = send.sample(&policy, rtt, tx) {
            conn.set_send_window(w);
            tracing::debug!(window = w, ?rtt, rate = tx, "connection send window");
        }
        last = stats;
        last_at = now;
    }
}
