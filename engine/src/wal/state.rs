//! The state of one shard's WAL shared by the API, the writer task and the segment
//! lifecycle (all on the shard's executor, behind one `RefCell`).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use glommio::task::JoinHandle;

use super::done::Completion;
use super::segments::Spare;
use super::stop::StopSignal;
use super::WalStats;
use crate::batch::BatchBuilder;
use crate::config::WalConfig;
use crate::format::IndexEntry;
use crate::group::{Bounds, GroupTable};
use crate::group_map::GroupMap;
use crate::notify::Notify;
use crate::storage::{IoBuf, Storage};

pub(super) struct Forming<B: IoBuf> {
    pub(super) builder: BatchBuilder<B>,
    /// Answers every request placed in this batch.
    pub(super) done: Completion,
    /// Backpressure units held by this batch, returned when it is written.
    pub(super) units: u64,
}

pub(super) struct Active<F> {
    pub(super) id: u64,
    pub(super) file: Rc<F>,
    /// The file's path, made once: every batch's error report names it.
    pub(super) path: Rc<PathBuf>,
    /// Invariant: write_pos is block aligned and every byte before it belongs to a batch
    /// written earlier (or the header); the writer never writes below it.
    pub(super) write_pos: u64,
    pub(super) capacity: u64,
    pub(super) index: Vec<IndexEntry>,
    pub(super) first_batch_seq: u64,
    /// Batches and bytes written here; their ratio decides whether the next spare is
    /// zero-filled (see `WalConfig::prefill_batch_bytes_max`).
    pub(super) batches: u64,
    pub(super) batch_bytes: u64,
}

pub(super) struct Inner<S: Storage> {
    pub(super) storage: S,
    pub(super) shard: u32,
    pub(super) dir: PathBuf,
    pub(super) cfg: WalConfig,
    /// What has been written (reads see it).
    pub(super) table: GroupTable,
    /// What has been accepted (validation of new requests).
    pub(super) bounds: GroupMap<Bounds>,
    /// Counts changes to `bounds`: a request planned against them before waiting for queue
    /// room re-plans only if this moved meanwhile.
    pub(super) bounds_epoch: u64,
    pub(super) forming: VecDeque<Forming<S::Buf>>,
    /// Invariant: durable_seq < next_seq; every batch with seq <= durable_seq is fsynced.
    pub(super) next_seq: u64,
    pub(super) durable_seq: u64,
    pub(super) active: Option<Active<S::File>>,
    pub(super) next_segment_id: u64,
    /// Segments on disk, oldest first, with a read handle once one was opened.
    pub(super) segments: BTreeMap<u64, Option<Rc<S::File>>>,
    /// Set once when the shard stops on an I/O error (fail-stop).
    pub(super) stop: Rc<StopSignal>,
    pub(super) closing: bool,
    /// True while the writer has a batch write or fdatasync in flight.
    pub(super) writer_busy: bool,
    pub(super) purge_wanted: bool,
    /// The next segment, prepared off the append path.
    pub(super) spare: Option<Spare<S::File>>,
    /// The shard's chain record as last written (`crate::chain`).
    pub(super) chain: Option<crate::format::chain::ChainRecord>,
    /// Average batch size of the last sealed segment (None before the first roll).
    pub(super) last_avg_batch_bytes: Option<u64>,
    /// Wakes the spare's preparation after each batch write (it paces itself on the active
    /// segment's progress) and when it must finish now (`prep_hurry`).
    pub(super) prep_notify: Rc<Notify>,
    pub(super) prep_hurry: bool,
    /// Off-path work (sealed-index writes) that `close` must finish.
    pub(super) background: Vec<(Rc<std::cell::Cell<bool>>, JoinHandle<()>)>,
    pub(super) stats: WalStats,
}
