//! Telling a dead node from a quiet one sooner than its heartbeats can.
//!
//! A node whose heartbeat is `PROBE_AFTER` late is asked over NATS, on
//! its inbox subscription (`wire::ping_subject`). NATS answers "no
//! responders" when no subscription matches: the node's connection to
//! NATS is gone, and its subscriptions with it (a `kill -9` closes the
//! socket, and NATS drops them at once). After `GONE_PROBES` such answers
//! since the node was last heard (with no answer of its own between
//! them; a question that timed out neither counts nor resets) the node
//! is taken for dead then, instead of `DEAD_AFTER` after
//! its last heartbeat: clients waiting to resume its sessions, callers of
//! its callees and waiters on its locks are served about three times
//! sooner. A node that answers, or a question that times out (a busy
//! node, a slow NATS), leaves the verdict to the heartbeats, so a node
//! that is only slow is never taken for dead sooner than before. Nor is
//! one while this node has just (re)connected to NATS: the others may be
//! reconnecting too (`PROBE_GRACE`).

use bytes::Bytes;
use std::time::Duration;

/// A heartbeat this late (they come every second) makes the node asked.
pub(super) const PROBE_AFTER: Duration = Duration::from_millis(1500);
/// "No responders" answers since the node was last heard (and answered
/// nothing) that make the verdict.
pub(super) const GONE_PROBES: u8 = 2;
/// How long one question may take; past it the answer is `Unknown`.
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// No node is taken for dead by a probe until this node has been
/// connected to NATS this long (after a NATS restart every node
/// reconnects, some later than others).
pub(super) const PROBE_GRACE: Duration = crate::cluster::thread::DEAD_AFTER;

/// What NATS said when a node was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// No subscription of the node is left: its connection is gone.
    Gone,
    /// It answered.
    Here,
    /// No answer in time, or NATS could not be asked.
    Unknown,
}

/// A node's answer, for the cluster thread: the node, its life when it
/// was asked, the answer.
pub(super) type Answered = (super::NodeId, u64, Answer);

/// Asks a node, on its ping subject, whether it is still connected.
pub(super) async fn ask(client: async_nats::Client, subject: String) -> Answer {
    match tokio::time::timeout(PROBE_LIMIT, client.request(subject, Bytes::new())).await {
        Ok(Ok(_)) => Answer::Here,
        Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => Answer::Gone,
        _ => Answer::Unknown,
    }
}

/// What a node's run of answers has come to: `true` once it is taken for
/// dead. `gone` counts the "no responders" answers since it was last
/// heard or answered.
pub(super) fn verdict(gone: &mut u8, answer: Answer) -> bool {
    match answer {
        Answer::Gone => *gone = gone.saturating_add(1),
        Answer::Here => *gone = 0,
        Answer::Unknown => {}
    }
    *gone >= GONE_PROBES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gone_answers_in_a_row_make_the_verdict() {
        let mut gone = 0;
        assert!(!verdict(&mut gone, Answer::Gone));
        assert!(verdict(&mut gone, Answer::Gone));
    }

    #[test]
    fn an_answer_starts_the_count_again_and_silence_does_not() {
        let mut gone = 0;
        assert!(!verdict(&mut gone, Answer::Gone));
        assert!(!verdict(&mut gone, Answer::Here));
        assert!(!verdict(&mut gone, Answer::Gone));
        assert!(!verdict(&mut gone, Answer::Unknown));
        assert!(verdict(&mut gone, Answer::Gone), "a timeout neither counts nor resets");
    }
}
