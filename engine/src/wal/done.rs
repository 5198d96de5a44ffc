//! The outcome of one group-commit batch, shared by every request placed in it.
//!
//! Every request of a batch becomes durable (or fails) at the same moment, so one shared cell
//! per batch replaces a channel per request: queuing a request costs an `Rc` clone instead of
//! an allocation, and the writer completes a batch of hundreds of requests with one store
//! and one wake-up per waiting task.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

/// Why a batch failed; every request of the batch gets its own [`Error`] made from it
/// (errors carrying an `io::Error` cannot be cloned).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The batch's fdatasync failed (fail-stop).
    Fsync {
        shard: u32,
        path: PathBuf,
        reason: String,
    },
    /// The batch's write failed (fail-stop).
    Write { path: PathBuf, reason: String },
    /// The shard stopped before the batch was written.
    Stopped { shard: u32, reason: String },
}

impl Failure {
    pub(crate) fn error(&self) -> Error {
        match self {
            Failure::Fsync {
                shard,
                path,
                reason,
            } => Error::FsyncFailed {
                shard: *shard,
                path: path.clone(),
                reason: reason.clone(),
            },
            Failure::Write { path, reason } => {
                Error::io(path, std::io::Error::other(reason.clone()))
            }
            Failure::Stopped { shard, reason } => Error::ShardStopped {
                shard: *shard,
                reason: reason.clone(),
            },
        }
    }
}

enum Outcome {
    Pending,
    Done(std::result::Result<(), Failure>),
    /// The writer dropped the batch without an answer (it stopped).
    Abandoned,
}

/// The state one batch's [`Completion`] and its requests' `Durable`s share.
pub(crate) struct BatchDone {
    /// Invariant: leaves `Pending` at most once, never returns to it.
    outcome: RefCell<Outcome>,
    /// Tasks waiting on a request of this batch; one slot per `Durable` that was polled
    /// (`Durable::slot`), so the list is bounded by the batch's request count.
    wakers: RefCell<Vec<Waker>>,
}

/// A batch's outcome as its requests see it once it is known.
pub(crate) enum Finished {
    Done(Result<()>),
    /// The writer dropped the batch without an answer: it stopped.
    Abandoned,
}

impl BatchDone {
    /// The outcome if known, without waiting.
    pub(crate) fn peek(&self) -> Option<Finished> {
        match &*self.outcome.borrow() {
            Outcome::Pending => None,
            Outcome::Done(r) => Some(Finished::Done(r.as_ref().map_err(Failure::error).copied())),
            Outcome::Abandoned => Some(Finished::Abandoned),
        }
    }

    /// The outcome if known; otherwise registers `cx`'s waker in `slot` (one slot per
    /// caller, reused on every later poll).
    pub(crate) fn poll(&self, cx: &mut Context<'_>, slot: &mut Option<usize>) -> Poll<Finished> {
        if let Some(f) = self.peek() {
            return Poll::Ready(f);
        }
        let mut wakers = self.wakers.borrow_mut();
        match slot {
            Some(i) => {
                if !wakers[*i].will_wake(cx.waker()) {
                    wakers[*i] = cx.waker().clone();
                }
            }
            None => {
                *slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }

    fn settle(&self, outcome: Outcome) {
        {
            let mut o = self.outcome.borrow_mut();
            if !matches!(*o, Outcome::Pending) {
                return;
            }
            *o = outcome;
        }
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

/// The writer's end of a batch's outcome: answered once with [`Completion::complete`];
/// dropped unanswered, it tells the batch's requests that the writer stopped.
pub(crate) struct Completion(Rc<BatchDone>);

impl Completion {
    pub(crate) fn new() -> Self {
        Completion(Rc::new(BatchDone {
            outcome: RefCell::new(Outcome::Pending),
            wakers: RefCell::new(Vec::new()),
        }))
    }

    /// A handle for one more request placed in the batch.
    pub(crate) fn waiter(&self) -> Rc<BatchDone> {
        self.0.clone()
    }

    /// Answers every request of the batch and wakes their tasks.
    pub(crate) fn complete(self, result: std::result::Result<(), Failure>) {
        self.0.settle(Outcome::Done(result));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // A no-op after `complete`.
        self.0.settle(Outcome::Abandoned);
    }
}
