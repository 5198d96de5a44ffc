//! The shard's fail-stop signal: set once when the writer stops on an I/O error, readable at
//! once (`ShardWal::failure`) and awaitable (`ShardWal::failed`), so the layer above learns
//! of the failure the moment it happens rather than at its next write.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::error::Error;

pub(crate) struct StopSignal {
    shard: u32,
    /// Invariant: set at most once; never cleared.
    reason: RefCell<Option<String>>,
    /// Tasks waiting in `failed`. Bounded by the number of such tasks the caller runs.
    wakers: RefCell<Vec<Waker>>,
}

impl StopSignal {
    pub fn new(shard: u32) -> Self {
        StopSignal {
            shard,
            reason: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
        }
    }

    /// Records the failure (the first reason wins) and wakes every waiter. Returns whether
    /// this call stopped the shard.
    pub fn stop(&self, reason: String) -> bool {
        if self.reason.borrow().is_some() {
            return false;
        }
        *self.reason.borrow_mut() = Some(reason);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
        true
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn is_stopped(&self) -> bool {
        self.reason.borrow().is_some()
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// The error callers get once the shard has stopped.
    pub fn error(&self) -> Option<Error> {
        // Asked on every request: answer the healthy case without cloning anything.
        if !self.is_stopped() {
            return None;
        }
        self.reason().map(|reason| Error::ShardStopped {
            shard: self.shard,
            reason,
        })
    }

    /// Resolves with the shard's error once it has stopped.
    pub fn wait(&self) -> impl Future<Output = Error> + '_ {
        Wait { s: self }
    }
}

struct Wait<'a> {
    s: &'a StopSignal,
}

impl Future for Wait<'_> {
    type Output = Error;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Error> {
        if let Some(e) = self.s.error() {
            return Poll::Ready(e);
        }
        let mut wakers = self.s.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
