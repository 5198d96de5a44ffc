//! [`Latent`]: any [`Storage`] with seeded I/O latency, for tests.
//!
//! The simulated disk completes every operation on its first poll, so a task never yields at
//! an `.await` on storage and races between tasks of a shard (a read against a purge, a roll
//! against a read) never show. Here every operation waits a seeded number of executor turns
//! before it is issued and again before its completion is delivered, the way TigerBeetle's
//! storage simulator completes I/O at a later tick: other tasks run in between, at every
//! await, in an order fixed by the seed.

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{DirEntry, Storage, StorageFile};

/// Executor turns an operation may wait before it is issued, and again before it completes.
pub const LATENCY_TURNS_MAX: u32 = 256;

/// `inner` with each operation delayed by a seeded number of executor turns.
#[derive(Clone)]
pub struct Latent<S> {
    inner: S,
    rng: Rc<RefCell<SmallRng>>,
    turns_max: u32,
}

impl<S: Storage> Latent<S> {
    /// Delays of 0..=`turns_max` turns (at most [`LATENCY_TURNS_MAX`]) drawn from `seed`.
    pub fn new(inner: S, seed: u64, turns_max: u32) -> Self {
        Latent {
            inner,
            rng: Rc::new(RefCell::new(SmallRng::seed_from_u64(seed))),
            turns_max: turns_max.min(LATENCY_TURNS_MAX),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

async fn delay(rng: &RefCell<SmallRng>, turns_max: u32) {
    let turns = rng.borrow_mut().gen_range(0..=turns_max);
    for _ in 0..turns {
        futures_lite::future::yield_now().await;
    }
}

/// Runs `op` between two delays.
macro_rules! latent {
    ($self:ident, $op:expr) => {{
        delay(&$self.rng, $self.turns_max).await;
        let r = $op.await;
        delay(&$self.rng, $self.turns_max).await;
        r
    }};
}

impl<S: Storage> Storage for Latent<S> {
    type Buf = S::Buf;
    type File = LatentFile<S::File>;

    fn alloc_buf(&self, len: usize) -> Self::Buf {
        self.inner.alloc_buf(len)
    }

    fn alloc_buf_for_overwrite(&self, len: usize) -> Self::Buf {
        self.inner.alloc_buf_for_overwrite(len)
    }

    async fn create_new(&self, path: &Path) -> io::Result<Self::File> {
        let f = latent!(self, self.inner.create_new(path))?;
        Ok(self.wrap(f))
    }

    async fn open(&self, path: &Path, writable: bool) -> io::Result<Self::File> {
        let f = latent!(self, self.inner.open(path, writable))?;
        Ok(self.wrap(f))
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        latent!(self, self.inner.remove_file(path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        latent!(self, self.inner.rename(from, to))
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        latent!(self, self.inner.sync_dir(dir))
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        latent!(self, self.inner.create_dir_all(dir))
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        latent!(self, self.inner.list_dir(dir))
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        latent!(self, self.inner.exists(path))
    }
}

impl<S: Storage> Latent<S> {
    fn wrap(&self, file: S::File) -> LatentFile<S::File> {
        LatentFile {
            inner: file,
            rng: self.rng.clone(),
            turns_max: self.turns_max,
        }
    }
}

pub struct LatentFile<F> {
    inner: F,
    rng: Rc<RefCell<SmallRng>>,
    turns_max: u32,
}

impl<F: StorageFile> StorageFile for LatentFile<F> {
    type Buf = F::Buf;
    type ReadBuf = F::ReadBuf;

    async fn write_at(&self, buf: Self::Buf, offset: u64) -> io::Result<()> {
        latent!(self, self.inner.write_at(buf, offset))
    }

    async fn write_shared_at(&self, buf: std::rc::Rc<Self::Buf>, offset: u64) -> io::Result<()> {
        latent!(self, self.inner.write_shared_at(buf, offset))
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Self::ReadBuf> {
        latent!(self, self.inner.read_at(offset, len))
    }

    async fn write_durable_at(&self, buf: Self::Buf, offset: u64) -> io::Result<()> {
        latent!(self, self.inner.write_durable_at(buf, offset))
    }

    async fn sync_data(&self) -> io::Result<()> {
        latent!(self, self.inner.sync_data())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        latent!(self, self.inner.allocate(len))
    }

    async fn len(&self) -> io::Result<u64> {
        latent!(self, self.inner.len())
    }

    async fn close(self) -> io::Result<()> {
        delay(&self.rng, self.turns_max).await;
        let r = self.inner.close().await;
        delay(&self.rng, self.turns_max).await;
        r
    }
}
