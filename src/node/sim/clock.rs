//! Simulated time: a tick counter the simulation advances, and sleeps measured in ticks.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct SimClock {
    now: Cell<u64>,
    /// Sleepers by deadline, woken in the order they went to sleep (deterministic).
    sleepers: RefCell<Vec<(u64, Waker)>>,
}

impl SimClock {
    pub fn new() -> Rc<Self> {
        Rc::new(SimClock::default())
    }

    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Moves time one tick forward and wakes every sleeper whose deadline came.
    pub fn advance(&self) {
        let now = self.now.get() + 1;
        self.now.set(now);
        let due: Vec<Waker> = {
            let mut sleepers = self.sleepers.borrow_mut();
            let (due, rest): (Vec<_>, Vec<_>) = sleepers.drain(..).partition(|(d, _)| *d <= now);
            *sleepers = rest;
            due.into_iter().map(|(_, w)| w).collect()
        };
        for w in due {
            w.wake();
        }
    }

    /// Resolves once `ticks` ticks have passed.
    pub async fn sleep(&self, ticks: u64) {
        let deadline = self.now.get() + ticks;
        poll_fn(|cx| {
            if self.now.get() >= deadline {
                Poll::Ready(())
            } else {
                self.sleepers
                    .borrow_mut()
                    .push((deadline, cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
