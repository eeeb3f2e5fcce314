//! How a response body leaves: a pure decision over what is known once the response head is
//! read, so every branch is unit tested without sockets. The proxy's connection loop carries
//! the plan out; when a plan needs a pipe and none can be had, it plans again without pipes.
//!
//! The aims, measured (bench/README.md): a body read with its head leaves in the same write as
//! the head; a large body stays where it was read and the client head is written in front of it
//! (no copy); a `Content-Length` body of at least `splice_min_body` still to come moves socket to
//! socket with splice(2); a head that passes unchanged and is still queued in the upstream socket
//! (peeked) is spliced with its body.

use crate::request::BodyKind;

/// What is known about a response body when it is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFacts {
    /// Its framing.
    pub body: BodyKind,
    /// The head was peeked and passes unchanged: head and body are still queued in the upstream
    /// socket.
    pub queued: bool,
    /// Body bytes already in the upstream buffer (after the head).
    pub have: u64,
    /// `splice_min_body` (0: never splice).
    pub splice_min: u64,
    /// A pipe may be had (false once getting one failed).
    pub pipes: bool,
    /// The head was read with a small capped read (the API's bodies are usually large).
    pub small_head_read: bool,
    /// The most the upstream buffer holds.
    pub buffer_max: u64,
    /// Length of the client response head.
    pub head_out: usize,
    /// Consumed bytes in front of the body in the upstream buffer: room for the client head.
    pub room_in_front: usize,
}

/// Where the client head goes relative to body bytes written with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Copied in front of the body, over the upstream head it replaces (the body is larger).
    InPlace,
    /// The body bytes are copied behind the client head.
    Copied,
}

/// How the body leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// Head and body are spliced together from the upstream socket (a pipe is needed).
    SpliceWhole,
    /// The head goes with the `with_head` body bytes already read, the rest is spliced (a pipe
    /// is needed).
    Splice { with_head: u64, placement: Placement },
    /// A small head read left a short body: read the rest into the buffer, then plan again.
    ReadRest,
    /// The whole body (`n` bytes) is read: it goes in the same write as the head.
    WithHead { n: u64, placement: Placement },
    /// The head is written, then the body relayed by its framing.
    Relay(BodyKind),
}

impl BodyPlan {
    /// Whether carrying the plan out takes a pipe.
    pub fn needs_pipe(self) -> bool {
        matches!(self, BodyPlan::SpliceWhole | BodyPlan::Splice { .. })
    }
}

/// The plan for a body with these facts.
pub fn plan_body(f: &BodyFacts) -> BodyPlan {
    let BodyKind::Length(n) = f.body else {
        return BodyPlan::Relay(f.body);
    };
    if f.queued && f.pipes {
        return BodyPlan::SpliceWhole;
    }
    let placement = |with_head: u64| {
        if with_head > f.head_out as u64 && f.room_in_front >= f.head_out {
            Placement::InPlace
        } else {
            Placement::Copied
        }
    };
    if f.have >= n {
        return BodyPlan::WithHead { n, placement: placement(n) };
    }
    if f.pipes && f.splice_min > 0 && n - f.have >= f.splice_min {
        return BodyPlan::Splice { with_head: f.have, placement: placement(f.have) };
    }
    if f.small_head_read && n <= f.buffer_max {
        return BodyPlan::ReadRest;
    }
    BodyPlan::Relay(f.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: BodyKind, have: u64) -> BodyFacts {
        BodyFacts {
            body,
            queued: false,
            have,
            splice_min: 4096,
            pipes: true,
            small_head_read: false,
            buffer_max: 65536,
            head_out: 200,
            room_in_front: 300,
        }
    }

    #[test]
    fn framings_without_a_length_are_relayed() {
        for k in [BodyKind::Chunked, BodyKind::UntilClose, BodyKind::None] {
            assert_eq!(plan_body(&facts(k, 10)), BodyPlan::Relay(k));
        }
    }

    #[test]
    fn a_body_read_with_its_head_leaves_with_it_in_place_when_larger_and_there_is_room() {
        let f = facts(BodyKind::Length(12), 12);
        assert_eq!(plan_body(&f), BodyPlan::WithHead { n: 12, placement: Placement::Copied });
        let f = facts(BodyKind::Length(1000), 1500);
        assert_eq!(plan_body(&f), BodyPlan::WithHead { n: 1000, placement: Placement::InPlace });
        let f = BodyFacts { room_in_front: 100, ..facts(BodyKind::Length(1000), 1000) };
        assert_eq!(plan_body(&f), BodyPlan::WithHead { n: 1000, placement: Placement::Copied }, "no room");
    }

    #[test]
    fn large_bodies_still_to_come_are_spliced_unless_no_pipe_can_be_had() {
        let f = facts(BodyKind::Length(16384), 1000);
        assert_eq!(plan_body(&f), BodyPlan::Splice { with_head: 1000, placement: Placement::InPlace });
        assert!(plan_body(&f).needs_pipe());
        let f = BodyFacts { pipes: false, ..f };
        assert_eq!(plan_body(&f), BodyPlan::Relay(BodyKind::Length(16384)));
        let f = BodyFacts { splice_min: 0, ..facts(BodyKind::Length(16384), 1000) };
        assert_eq!(plan_body(&f), BodyPlan::Relay(BodyKind::Length(16384)), "splicing off");
        let f = facts(BodyKind::Length(5000), 1000);
        assert_eq!(plan_body(&f), BodyPlan::Relay(BodyKind::Length(5000)), "below splice_min still to come");
    }

    #[test]
    fn a_queued_unchanged_head_is_spliced_with_its_body_or_else_planned_as_read() {
        let f = BodyFacts { queued: true, ..facts(BodyKind::Length(16384), 0) };
        assert_eq!(plan_body(&f), BodyPlan::SpliceWhole);
        let f = BodyFacts { pipes: false, ..f };
        assert_eq!(plan_body(&f), BodyPlan::Relay(BodyKind::Length(16384)));
    }

    #[test]
    fn a_short_body_behind_a_small_head_read_is_read_whole_first() {
        let f = BodyFacts { small_head_read: true, ..facts(BodyKind::Length(3000), 500) };
        assert_eq!(plan_body(&f), BodyPlan::ReadRest);
        let f = BodyFacts { have: 3000, ..f };
        assert_eq!(plan_body(&f), BodyPlan::WithHead { n: 3000, placement: Placement::InPlace });
        let f = BodyFacts { buffer_max: 2048, have: 500, ..f };
        assert_eq!(plan_body(&f), BodyPlan::Relay(BodyKind::Length(3000)), "does not fit the buffer");
    }
}
