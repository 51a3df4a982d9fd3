//! Keeping the certificate alive: renewal through the CA service at 2/3 of
//! its lifetime (retried with backoff while the CA cannot be reached; the
//! gateway serves on the certificate it has meanwhile), regular fetches of
//! the trust bundle and deny list, and the time left as a metric and, once
//! it runs out, as an event.
//!
//! New files are written under the identity's file lock and the reload
//! watcher is woken, so renewed identities go through the same checks as
//! any other change of the files.
//!
//! The requests themselves are `strait-enroll`'s client; this loop stays in
//! the gateway because it drives the gateway's own state (the identity in
//! force, the reload watcher, metrics and the event log), and keeping it
//! here keeps the dependency one-way: the gateway calls enrollment, and
//! enrollment never needs to know the data plane.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use strait_ca::Overwrite;
use strait_core::renewal::RenewalSchedule;

use crate::config::{IdentityPaths, RenewalConfig};
use crate::events::EventLog;
use crate::reload::CurrentIdentity;

/// How long a written renewal may take to be picked up by the watcher.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Renews and refreshes through the CA service until the gateway stops.
pub async fn run(
    config: RenewalConfig,
    paths: IdentityPaths,
    current: Arc<CurrentIdentity>,
    region: String,
    events: Arc<EventLog>,
) {
    let held = current.get();
    let mut schedule = RenewalSchedule::new(
        held.identity.not_before,
        held.identity.not_after,
        SystemTime::now(),
    );
    tracing::info!(ca = %config.ca_service, renew_at = %strait_ca::time::rfc3339(schedule.renew_at()),
        "certificate renewal through the CA service is on");
    // Two loops side by side: a bundle fetch waiting on an unreachable CA
    // must never hold up a renewal that is due.
    let renewals = async {
        loop {
            // The files may have been replaced by someone else (an operator,
            // cert-manager): follow the certificate actually in force.
            let held = current.get();
            if held.identity.not_after != schedule.not_after() {
                schedule = RenewalSchedule::new(
                    held.identity.not_before,
                    held.identity.not_after,
                    SystemTime::now(),
                );
            }
            tokio::time::sleep(schedule.wait(SystemTime::now())).await;
            renew_once(&config, &paths, &current, &region, &events, &mut schedule).await;
        }
    };
    let refreshes = async {
        let mut refresh = tokio::time::interval(config.refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        let mut streak = FailureStreak::default();
        loop {
            refresh.tick().await;
            let result = refresh_bundle(&config, &paths, &current).await;
            report_refresh(result, &mut streak, &config, &region, &events);
        }
    };
    tokio::join!(renewals, refreshes);
}

async fn renew_once(
    config: &RenewalConfig,
    paths: &IdentityPaths,
    current: &CurrentIdentity,
    region: &str,
    events: &EventLog,
    schedule: &mut RenewalSchedule,
) {
    let held = current.get();
    let labels =
        |result: &'static str| [("region", region.to_owned()), ("result", result.to_owned())];
    let renewed = strait_enroll::renew(&config.ca_service, &held.identity, &held.bundle).await;
    let outcome = match renewed {
        Ok(enrolled) => {
            let written = {
                let _files = current.files.lock().await;
                enrolled.write(paths, Overwrite::Replace)
            };
            match written {
                Ok(()) => {
                    current.wake.notify_one();
                    Ok(enrolled)
                }
                Err(e) => Err(format!("cannot write the renewed certificate: {e}")),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(enrolled) => {
            let new = &enrolled.identity;
            // Wait for the watcher to put it in force, so the schedule
            // follows the certificate handshakes actually use.
            let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
            while current.get().identity.not_after != new.not_after
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            metrics::counter!(crate::metrics::RENEWALS, &labels("ok")).increment(1);
            schedule.renewed(new.not_before, new.not_after, SystemTime::now());
            events.record(
                "certificate_renewed",
                format!(
                    "valid until {}, next renewal at {}",
                    strait_ca::time::rfc3339(new.not_after),
                    strait_ca::time::rfc3339(schedule.renew_at())
                ),
            );
            tracing::info!(id = %new.id, not_after = %strait_ca::time::rfc3339(new.not_after),
                "certificate renewed");
        }
        Err(reason) => {
            metrics::counter!(crate::metrics::RENEWALS, &labels("error")).increment(1);
            let next = schedule.failed(SystemTime::now(), rand::rng().random::<f64>());
            let left = schedule.remaining(SystemTime::now());
            events.record(
                "certificate_renewal_failed",
                format!(
                    "{reason}; {left:.0} s left, next attempt at {}",
                    strait_ca::time::rfc3339(next)
                ),
            );
            tracing::warn!(failures = schedule.failures(), seconds_left = left as i64,
                next_attempt = %strait_ca::time::rfc3339(next),
                "certificate renewal failed, serving on the current certificate: {reason}");
        }
    }
}

/// How often a refresh that keeps failing is logged at WARN again (and
/// recorded as an event); the counter sees every attempt.
pub const REFRESH_WARN_EVERY: Duration = Duration::from_secs(300);

/// Consecutive failed refreshes, so that a CA nobody answers is reported
/// at once and then every [`REFRESH_WARN_EVERY`], not on every attempt.
#[derive(Debug, Default)]
struct FailureStreak {
    failures: u32,
    last_report: Option<tokio::time::Instant>,
}

impl FailureStreak {
    /// A failure at `now`: whether to report it.
    fn failed(&mut self, now: tokio::time::Instant) -> bool {
        self.failures += 1;
        let due = self
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REFRESH_WARN_EVERY);
        if due {
            self.last_report = Some(now);
        }
        due
    }

    /// A success: how many failures it ended, if any.
    fn succeeded(&mut self) -> Option<u32> {
        let ended = std::mem::take(self).failures;
        (ended > 0).then_some(ended)
    }
}

fn report_refresh(
    result: Result<(), String>,
    streak: &mut FailureStreak,
    config: &RenewalConfig,
    region: &str,
    events: &EventLog,
) {
    let labels =
        |result: &'static str| [("region", region.to_owned()), ("result", result.to_owned())];
    match result {
        Ok(()) => {
            metrics::counter!(crate::metrics::BUNDLE_REFRESHES, &labels("ok")).increment(1);
            if let Some(failures) = streak.succeeded() {
                events.record(
                    "bundle_refresh_recovered",
                    format!("after {failures} failed refreshes"),
                );
                tracing::info!(ca = %config.ca_service, failures,
                    "bundle and deny list refresh works again");
            }
        }
        Err(reason) => {
            metrics::counter!(crate::metrics::BUNDLE_REFRESHES, &labels("error")).increment(1);
            if streak.failed(tokio::time::Instant::now()) {
                let detail = format!(
                    "{reason} ({} in a row; the current bundle and deny list stay)",
                    streak.failures
                );
                events.record("bundle_refresh_failed", detail.clone());
                tracing::warn!(ca = %config.ca_service,
                    "bundle and deny list refresh failed, revocations are not learnt until it works: {detail}");
            }
        }
    }
}

/// Fetches the bundle and deny list and writes them when they changed.
async fn refresh_bundle(
    config: &RenewalConfig,
    paths: &IdentityPaths,
    current: &CurrentIdentity,
) -> Result<(), String> {
    let held = current.get();
    let fetched =
        strait_enroll::fetch_bundle(&config.ca_service, &held.identity, &held.bundle).await;
    let (bundle_pem, deny) = fetched.map_err(|e| e.to_string())?;
    let unchanged = |path: &std::path::Path, text: &str| {
        std::fs::read_to_string(path).is_ok_and(|old| old == text)
    };
    if unchanged(&paths.bundle, &bundle_pem) && unchanged(&paths.deny, &deny) {
        return Ok(());
    }
    let written = {
        let _files = current.files.lock().await;
        strait_ca::files::write(
            paths.bundle.as_path(),
            bundle_pem.as_bytes(),
            strait_ca::files::PUBLIC_MODE,
            Overwrite::Replace,
        )
        .and_then(|()| {
            strait_ca::files::write(
                paths.deny.as_path(),
                deny.as_bytes(),
                strait_ca::files::PUBLIC_MODE,
                Overwrite::Replace,
            )
        })
    };
    written.map_err(|e| format!("cannot write the fetched bundle or deny list: {e}"))?;
    tracing::info!("trust bundle or deny list changed at the CA; reloading");
    current.wake.notify_one();
    Ok(())
}

/// Publishes the certificate's time left every second, and reports once
/// when it has run out.
pub async fn report_expiry(current: Arc<CurrentIdentity>, region: String, events: Arc<EventLog>) {
    let labels = [("region", region)];
    let mut reported_for = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let held = current.get();
        let left = strait_core::renewal::seconds_left(held.identity.not_after, SystemTime::now());
        metrics::gauge!(crate::metrics::CERT_REMAINING, &labels).set(left);
        if left <= 0.0 && reported_for != Some(held.identity.not_after) {
            reported_for = Some(held.identity.not_after);
            let when = strait_ca::time::rfc3339(held.identity.not_after);
            events.record(
                "certificate_expired",
                format!(
                    "{} expired at {when}; peers refuse new tunnels until it is renewed",
                    held.id()
                ),
            );
            tracing::error!(id = %held.id(), not_after = %when,
                "certificate expired: open tunnels keep going, peers refuse new ones until it is renewed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_refresh_is_reported_at_once_then_rate_limited() {
        let t0 = tokio::time::Instant::now();
        let mut streak = FailureStreak::default();
        assert!(streak.failed(t0));
        assert!(!streak.failed(t0 + Duration::from_secs(30)));
        assert!(!streak.failed(t0 + REFRESH_WARN_EVERY - Duration::from_secs(1)));
        assert!(streak.failed(t0 + REFRESH_WARN_EVERY));
        assert_eq!(streak.failures, 4);
        assert_eq!(streak.succeeded(), Some(4));
        assert_eq!(streak.succeeded(), None);
        // A new streak is reported at once again.
        assert!(streak.failed(t0 + REFRESH_WARN_EVERY + Duration::from_secs(1)));
    }
}
