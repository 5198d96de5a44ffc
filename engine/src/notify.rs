//! A single-waiter wake-up flag for the shard's writer task (same thread only).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once `notify` has been called since the last wait returned.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        Wait { n: self }
    }
}

struct Wait<'a> {
    n: &'a Notify,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.flag.replace(false) {
            return Poll::Ready(());
        }
        *self.n.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
