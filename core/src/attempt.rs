//! One try of a client connection on one peer, sans-IO: opening -> sent ->
//! accepted | refused | ambiguous. It exists so that the one question that
//! decides whether a request may reach two targets, "may these early bytes
//! be replayed elsewhere?", has one answer, tested over every order of
//! events.
//!
//! The exporting side forwards the early bytes as soon as its target is
//! connected, before its answer is seen. So only proof of non-delivery
//! allows a replay: a refusal status, or a stream reset with the code the
//! exporter uses only before it touched its target. Everything else (no
//! answer, the tunnel found Down, a reset after forwarding) is ambiguous and
//! replays only when the import is declared idempotent.

use crate::frame::StatusCode;

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// A stream is being opened; nothing of the client's has left.
    Opening,
    /// OPEN and possibly early bytes were written: the peer may forward.
    Sent,
    /// The peer answered OK: the stream is the client's.
    Accepted,
    /// The peer proved it did not forward.
    Refused(Refusal),
    /// The peer may or may not have forwarded.
    Ambiguous(Ambiguity),
}

/// Proof that nothing reached a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A STATUS other than OK.
    Status(StatusCode),
    /// The stream was reset (or stopped) with the code the exporting side
    /// sends only before touching its target.
    NotForwarded,
    /// The stream could not be opened: nothing was written.
    NotOpened,
}

/// Why an attempt cannot tell whether its bytes were delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// No answer within the open timeout.
    NoAnswer,
    /// The tunnel was found Down or closed while waiting.
    TunnelDown,
    /// The stream was reset with a code that allows forwarding.
    Reset,
    /// The answer was not a STATUS frame, or not a frame at all.
    Garbled,
}

impl Ambiguity {
    pub fn as_str(self) -> &'static str {
        match self {
            Ambiguity::NoAnswer => "no answer",
            Ambiguity::TunnelDown => "tunnel down",
            Ambiguity::Reset => "reset after it may have forwarded",
            Ambiguity::Garbled => "unreadable answer",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Status(code) => write!(f, "refused with {code}"),
            Refusal::NotForwarded => f.write_str("reset before reaching the target"),
            Refusal::NotOpened => f.write_str("no stream could be opened"),
        }
    }
}

impl std::fmt::Display for AttemptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptState::Opening => f.write_str("opening"),
            AttemptState::Sent => f.write_str("sent"),
            AttemptState::Accepted => f.write_str("accepted"),
            AttemptState::Refused(r) => write!(f, "refused ({r})"),
            AttemptState::Ambiguous(a) => write!(f, "ambiguous ({})", a.as_str()),
        }
    }
}

/// One attempt. The first terminal state wins: a late OK after the tunnel
/// was found Down does not make the attempt accepted (the client was
/// already answered), and a refusal after a reset does not clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    state: AttemptState,
}

impl Default for Attempt {
    fn default() -> Self {
        Attempt::new()
    }
}

impl From<AttemptState> for Attempt {
    fn from(state: AttemptState) -> Self {
        Attempt { state }
    }
}

impl Attempt {
    pub fn new() -> Self {
        Attempt {
            state: AttemptState::Opening,
        }
    }

    pub fn state(&self) -> AttemptState {
        self.state
    }

    pub fn is_done(&self) -> bool {
        !matches!(self.state, AttemptState::Opening | AttemptState::Sent)
    }

    fn settle(&mut self, next: AttemptState) -> AttemptState {
        if !self.is_done() {
            self.state = next;
        }
        self.state
    }

    /// The stream could not be opened (nothing written).
    pub fn handle_open_failed(&mut self) -> AttemptState {
        match self.state {
            AttemptState::Opening => self.settle(AttemptState::Refused(Refusal::NotOpened)),
            _ => self.state,
        }
    }

    /// Bytes (OPEN at least) were handed to the stream.
    pub fn handle_sent(&mut self) -> AttemptState {
        if self.state == AttemptState::Opening {
            self.state = AttemptState::Sent;
        }
        self.state
    }

    /// The peer's STATUS arrived.
    pub fn handle_status(&mut self, code: StatusCode) -> AttemptState {
        match code {
            StatusCode::Ok => self.settle(AttemptState::Accepted),
            refused => self.settle(AttemptState::Refused(Refusal::Status(refused))),
        }
    }

    /// The peer reset its side, or stopped ours; `before_target` when the
    /// code is the one it uses only before touching its target.
    pub fn handle_reset(&mut self, before_target: bool) -> AttemptState {
        if before_target {
            self.settle(AttemptState::Refused(Refusal::NotForwarded))
        } else {
            self.handle_ambiguous(Ambiguity::Reset)
        }
    }

    /// Something that leaves delivery unknown: timeout, tunnel down,
    /// garbled answer. Before anything was sent it is a plain non-delivery.
    pub fn handle_ambiguous(&mut self, why: Ambiguity) -> AttemptState {
        match self.state {
            AttemptState::Opening => self.settle(AttemptState::Refused(Refusal::NotOpened)),
            _ => self.settle(AttemptState::Ambiguous(why)),
        }
    }

    /// Whether the client's early bytes may go to another candidate.
    pub fn may_replay(&self, idempotent: bool) -> bool {
        match self.state {
            AttemptState::Refused(_) => true,
            AttemptState::Ambiguous(_) => idempotent,
            AttemptState::Opening | AttemptState::Sent | AttemptState::Accepted => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn refusals_replay_and_ambiguity_only_when_idempotent() {
        let mut a = Attempt::new();
        a.handle_sent();
        a.handle_status(StatusCode::TargetUnreachable);
        assert!(a.may_replay(false));

        let mut a = Attempt::new();
        a.handle_sent();
        a.handle_ambiguous(Ambiguity::TunnelDown);
        assert!(!a.may_replay(false));
        assert!(a.may_replay(true));

        let mut a = Attempt::new();
        a.handle_sent();
        a.handle_reset(true);
        assert!(a.may_replay(false));
    }

    #[test]
    fn a_late_ok_after_down_stays_ambiguous() {
        let mut a = Attempt::new();
        a.handle_sent();
        a.handle_ambiguous(Ambiguity::TunnelDown);
        assert_eq!(
            a.handle_status(StatusCode::Ok),
            AttemptState::Ambiguous(Ambiguity::TunnelDown)
        );
    }

    #[test]
    fn failing_before_anything_was_sent_is_not_a_delivery() {
        let mut a = Attempt::new();
        a.handle_ambiguous(Ambiguity::TunnelDown);
        assert_eq!(a.state(), AttemptState::Refused(Refusal::NotOpened));
        assert!(a.may_replay(false));
    }

    /// What the exporting side did with one OPEN.
    #[derive(Debug, Clone, Copy)]
    enum Exporter {
        Refused(StatusCode),
        ResetBeforeTarget,
        /// Connected the target and forwarded, then:
        Forwarded(AfterForward),
        /// Never saw the stream.
        NeverSaw,
    }

    #[derive(Debug, Clone, Copy)]
    enum AfterForward {
        OkArrives,
        OkLost,
        ResetAfterOk,
        OkArrivesLate,
    }

    /// What the importing side observes, in an order drawn by the test.
    #[derive(Debug, Clone, Copy)]
    enum Seen {
        Status(StatusCode),
        Reset(bool),
        Ambiguous(Ambiguity),
    }

    fn exporter() -> impl Strategy<Value = Exporter> {
        let refusal = prop_oneof![
            Just(StatusCode::NoSuchService),
            Just(StatusCode::Forbidden),
            Just(StatusCode::TargetUnreachable),
            Just(StatusCode::Overloaded),
            Just(StatusCode::Draining),
        ];
        let after = prop_oneof![
            Just(AfterForward::OkArrives),
            Just(AfterForward::OkLost),
            Just(AfterForward::ResetAfterOk),
            Just(AfterForward::OkArrivesLate),
        ];
        prop_oneof![
            refusal.prop_map(Exporter::Refused),
            Just(Exporter::ResetBeforeTarget),
            after.prop_map(Exporter::Forwarded),
            Just(Exporter::NeverSaw),
        ]
    }

    fn ambiguity() -> impl Strategy<Value = Ambiguity> {
        prop_oneof![
            Just(Ambiguity::NoAnswer),
            Just(Ambiguity::TunnelDown),
            Just(Ambiguity::Garbled),
        ]
    }

    proptest! {
        /// Whatever the exporter did and in whatever order the importing
        /// side learns of it (with timeouts and Down verdicts mixed in
        /// anywhere), bytes that reached a target are never replayed on a
        /// non-idempotent import.
        #[test]
        fn forwarded_bytes_are_never_replayed(
            what in exporter(),
            noise in prop::collection::vec(ambiguity(), 0..3),
            noise_at in prop::collection::vec(0usize..4, 0..3),
            sent in any::<bool>(),
        ) {
            // What the exporter's own actions let the importer see.
            let mut seen: Vec<Seen> = match what {
                Exporter::Refused(code) => vec![Seen::Status(code)],
                Exporter::ResetBeforeTarget => vec![Seen::Reset(true)],
                Exporter::Forwarded(AfterForward::OkArrives) => vec![Seen::Status(StatusCode::Ok)],
                Exporter::Forwarded(AfterForward::OkLost) => vec![],
                Exporter::Forwarded(AfterForward::ResetAfterOk) => vec![Seen::Reset(false)],
                Exporter::Forwarded(AfterForward::OkArrivesLate) => vec![Seen::Status(StatusCode::Ok)],
                Exporter::NeverSaw => vec![],
            };
            if matches!(what, Exporter::Forwarded(AfterForward::OkArrivesLate)) {
                seen.insert(0, Seen::Ambiguous(Ambiguity::TunnelDown));
            }
            for (n, at) in noise.iter().zip(noise_at) {
                let at = at.min(seen.len());
                seen.insert(at, Seen::Ambiguous(*n));
            }
            let forwarded = matches!(what, Exporter::Forwarded(_));
            // The exporter can only have seen the stream if it was sent.
            prop_assume!(sent || !forwarded);
            prop_assume!(sent || matches!(what, Exporter::NeverSaw));
            let mut a = Attempt::new();
            if sent {
                a.handle_sent();
            }
            for s in &seen {
                match *s {
                    Seen::Status(code) => a.handle_status(code),
                    Seen::Reset(before) => a.handle_reset(before),
                    Seen::Ambiguous(why) => a.handle_ambiguous(why),
                };
            }
            if !a.is_done() {
                // The importer gives up waiting at some point.
                a.handle_ambiguous(Ambiguity::NoAnswer);
            }
            if forwarded {
                prop_assert!(!a.may_replay(false), "{what:?} then {seen:?} gave {:?}", a.state());
            }
            // Proof of non-delivery seen first always allows the replay.
            if let Some(Seen::Status(code)) = seen.first()
                && *code != StatusCode::Ok
            {
                prop_assert!(a.may_replay(false));
            }
            // Idempotent imports replay everything that was not accepted.
            prop_assert_eq!(a.may_replay(true), a.state() != AttemptState::Accepted);
        }
    }
}
