//! Bugs planted on purpose for the node simulation's mutation check (docs/simulation.md):
//! each switch makes the driver break one promise, and the simulation must catch it. Only a
//! test build can turn one on (for its own thread); in every other build [`active`] is a
//! constant `false` the compiler removes.

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
    /// The bug 650dabe fixed: a leader's producer table truncates at a configuration change
    /// or no-op of its own term, forgetting the batches proposed after it in the same round
    /// (the producer's next batch is refused as out of order for ever; a retry of a forgotten
    /// one is written twice).
    ForgetOwnProducerBatches,
}

#[cfg(test)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Planted>> = const { std::cell::Cell::new(None) };
}

/// Turns `bug` on (or every bug off) for the current thread.
#[cfg(test)]
pub fn set(bug: Option<Planted>) {
    ACTIVE.with(|a| a.set(bug));
}

#[cfg(test)]
pub fn active(bug: Planted) -> bool {
    ACTIVE.with(|a| a.get()) == Some(bug)
}

#[cfg(not(test))]
#[inline(always)]
pub fn active(_bug: Planted) -> bool {
    false
}
