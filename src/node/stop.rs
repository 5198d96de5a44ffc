//! How a node stops: a switch that tells every shard to stop (from the signal thread, or
//! when a shard ends on its own), the SIGTERM/SIGINT thread, and the watchdog that bounds a
//! stop by `shutdown_timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::oneshot;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::node::serve::EXIT_FORCED;

/// Why the node is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    ShardExited,
}

/// Broadcasts "stop" to every shard, from any thread.
#[derive(Default)]
pub struct StopSwitch {
    requested: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    /// One sender per registered shard.
    senders: Mutex<Vec<oneshot::Sender<()>>>,
}

impl StopSwitch {
    /// A future that completes when the stop is requested (at once if it already was).
    pub fn register(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if self.requested.load(Ordering::SeqCst) {
            let _ = tx.send(());
        } else {
            senders.push(tx);
        }
        rx
    }

    /// Returns true for the first request.
    pub fn request(&self, reason: StopReason) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if self.requested.swap(true, Ordering::SeqCst) {
            return false;
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        for tx in senders.drain(..) {
            // A shard that already ended dropped its receiver; nothing to tell it.
            let _ = tx.send(());
        }
        true
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held by each copy of the shard task. `run_shards` gives every shard its own copy and
/// drops it when that shard ends; a copy dropped before the stop was requested means a shard
/// ended on its own (its WAL failed to open or recover, or its executor died), and the node
/// stops rather than run with a shard missing at start-up.
///
/// Only copies are armed: the original, kept by `run_shards` itself, is dropped when it
/// returns (also when it fails before starting any shard, e.g. on a locked directory).
pub struct ShardWatch {
    switch: Arc<StopSwitch>,
    armed: bool,
}

impl ShardWatch {
    /// The unarmed original; its clones are armed.
    pub fn new(switch: Arc<StopSwitch>) -> Self {
        ShardWatch {
            switch,
            armed: false,
        }
    }

    /// See [`StopSwitch::register`].
    pub fn register(&self) -> oneshot::Receiver<()> {
        self.switch.register()
    }

    /// Stops the whole node (a shard could not bring up what it must serve).
    pub fn stop_node(&self, reason: StopReason) -> bool {
        self.switch.request(reason)
    }
}

impl Clone for ShardWatch {
    fn clone(&self) -> Self {
        ShardWatch {
            switch: self.switch.clone(),
            armed: true,
        }
    }
}

impl Drop for ShardWatch {
    fn drop(&mut self) {
        if self.armed
            && !self.switch.requested.load(Ordering::SeqCst)
            && self.switch.request(StopReason::ShardExited)
        {
            error!("shutdown: a shard ended while the node was running; stopping the others");
        }
    }
}

pub struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalThread {
    pub fn close(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "a signal",
    }
}

pub fn spawn_signal_thread(
    switch: Arc<StopSwitch>,
    shutdown_timeout: Duration,
) -> std::io::Result<SignalThread> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("tern-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = signal_name(sig);
                if switch.request(StopReason::Signal(name)) {
                    info!(
                        timeout_ms = shutdown_timeout.as_millis() as u64,
                        "shutdown: {name} received; stopping"
                    );
                    spawn_watchdog(shutdown_timeout);
                } else {
                    error!("shutdown: {name} received again; exiting now without a clean close");
                    std::process::exit(EXIT_FORCED.into());
                }
            }
        })?;
    Ok(SignalThread { handle, thread })
}

/// Ends the process if the stop outlives its bound; a clean stop exits first.
fn spawn_watchdog(timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tern-shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            error!(
                timeout_ms = timeout.as_millis() as u64,
                "shutdown: not finished within shutdown_timeout; exiting without a clean close"
            );
            std::process::exit(EXIT_FORCED.into());
        });
    if let Err(e) = spawned {
        warn!("shutdown: cannot start the watchdog ({e}); the stop is unbounded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reaches_shards_registered_before_and_after() {
        let switch = StopSwitch::default();
        let mut early = switch.register();
        assert_eq!(early.try_recv(), Ok(None));
        assert!(switch.request(StopReason::Signal("SIGTERM")));
        assert!(
            !switch.request(StopReason::ShardExited),
            "only the first request counts"
        );
        assert_eq!(early.try_recv(), Ok(Some(())));
        let mut late = switch.register();
        assert_eq!(late.try_recv(), Ok(Some(())));
        assert_eq!(switch.reason(), Some(StopReason::Signal("SIGTERM")));
    }

    #[test]
    fn only_a_shard_copy_ending_early_stops_the_node() {
        let switch = Arc::new(StopSwitch::default());
        let original = ShardWatch::new(switch.clone());
        let copy = original.clone();
        drop(original);
        assert_eq!(
            switch.reason(),
            None,
            "the unarmed original does not stop the node"
        );
        drop(copy);
        assert_eq!(switch.reason(), Some(StopReason::ShardExited));

        let switch = Arc::new(StopSwitch::default());
        let copy = ShardWatch::new(switch.clone()).clone();
        switch.request(StopReason::Signal("SIGINT"));
        drop(copy);
        assert_eq!(switch.reason(), Some(StopReason::Signal("SIGINT")));
    }
}
