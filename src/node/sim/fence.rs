//! [`Fenced`]: a node's view of its simulated disk for one life of the node. A crash cancels
//! the node's tasks, but tasks the dead WAL left behind (a segment being prepared, a purge)
//! may still be waiting on their I/O; a real process would be gone. Once the fence is down
//! every directory operation fails, so nothing of a dead life touches the next one's files.
//! (Open files need no fence: the simulated disk makes every handle stale at a crash.)

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use tern_engine::storage::{DirEntry, Storage};

#[derive(Clone)]
pub struct Fenced<S> {
    inner: S,
    alive: Rc<Cell<bool>>,
}

impl<S: Storage> Fenced<S> {
    /// `inner` for a life that lasts until `alive` turns false.
    pub fn new(inner: S, alive: Rc<Cell<bool>>) -> Self {
        Fenced { inner, alive }
    }

    fn check(&self) -> io::Result<()> {
        if self.alive.get() {
            Ok(())
        } else {
            Err(io::Error::other("simulated node is dead (crashed life)"))
        }
    }
}

impl<S: Storage> Storage for Fenced<S> {
    type Buf = S::Buf;
    type File = S::File;

    fn alloc_buf(&self, len: usize) -> Self::Buf {
        self.inner.alloc_buf(len)
    }

    fn alloc_buf_for_overwrite(&self, len: usize) -> Self::Buf {
        self.inner.alloc_buf_for_overwrite(len)
    }

    async fn create_new(&self, path: &Path) -> io::Result<Self::File> {
        self.check()?;
        self.inner.create_new(path).await
    }

    async fn open(&self, path: &Path, writable: bool) -> io::Result<Self::File> {
        self.check()?;
        self.inner.open(path, writable).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove_file(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.rename(from, to).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.sync_dir(dir).await
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.create_dir_all(dir).await
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.check()?;
        self.inner.list_dir(dir).await
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        self.check()?;
        self.inner.exists(path).await
    }
}
