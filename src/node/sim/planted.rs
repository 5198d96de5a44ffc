//! Bugs planted on purpose for the simulation's mutation check (docs/simulation.md): each
//! switch makes the driver break one promise, and the simulation must catch it. Test builds
//! only; both are off unless a test turns them on for its own thread.

use std::cell::Cell;

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The leader acknowledges an `acks=all` produce once it is durable on the leader alone,
    /// before a majority has it.
    AckBeforeMajority,
    /// A new leader stamps its first produce at the high watermark instead of the end of its
    /// log, reusing the offsets of entries of the previous term it still holds (and followers
    /// do not check the stamp).
    ReuseOffsetAfterFailover,
}

thread_local! {
    static ACTIVE: Cell<Option<Planted>> = const { Cell::new(None) };
}

/// Turns `bug` on (or every bug off) for the current thread.
pub fn set(bug: Option<Planted>) {
    ACTIVE.with(|a| a.set(bug));
}

pub fn active(bug: Planted) -> bool {
    ACTIVE.with(|a| a.get()) == Some(bug)
}
