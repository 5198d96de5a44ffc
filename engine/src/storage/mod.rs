//! The I/O seam. The engine is generic over [`Storage`]: glommio DMA files in production
//! ([`dma::DmaStorage`]), an in-memory disk with fault injection in tests (`sim::SimStorage`,
//! with seeded I/O latency from `latency::Latent`; both behind the `sim` cargo feature so
//! production builds do not carry them).
//!
//! Contract every implementation upholds (the WAL relies on it):
//! - `write_at` offsets and buffer lengths are multiples of [`BLOCK_BYTES`]; a write either
//!   completes in full or returns an error (a short write is reported as an error).
//! - Data written is visible to reads at once, but survives a crash only after `sync_data`
//!   on that file has returned Ok.
//! - `create_new`, `rename` and `remove_file` change the directory; they survive a crash only
//!   after `sync_dir` on the parent directory has returned Ok.
//! - An error from `sync_data` means the data may be lost: the caller must not retry it and
//!   report success (see the fail-stop rule in docs/ARCHITECTURE.md).
//!
//! Futures are not `Send`: they run on the shard's own thread-per-core executor.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;

pub mod dma;
#[cfg(feature = "sim")]
pub mod latency;
#[cfg(feature = "sim")]
pub mod sim;

pub use crate::constants::BLOCK_BYTES;

/// An aligned, zero-initialised buffer that can be handed to [`StorageFile::write_at`].
pub trait IoBuf: 'static {
    fn as_bytes(&self) -> &[u8];
    fn as_bytes_mut(&mut self) -> &mut [u8];
    /// Shrinks the buffer's length to `len` (destructive; `len` <= current length).
    fn trim_to(&mut self, len: usize);
}

/// One directory entry as returned by [`Storage::list_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type Buf: IoBuf;
    type File: StorageFile<Buf = Self::Buf>;

    /// Allocates a zero-filled buffer of `len` bytes aligned to [`BLOCK_BYTES`].
    fn alloc_buf(&self, len: usize) -> Self::Buf;

    /// Like [`alloc_buf`](Self::alloc_buf) but the contents are unspecified: for a caller that
    /// overwrites every byte it writes (the WAL's batch builder zeroes its own padding). Saves
    /// a memset of the whole buffer on the append path.
    fn alloc_buf_for_overwrite(&self, len: usize) -> Self::Buf {
        self.alloc_buf(len)
    }

    /// Creates a new file for reading and writing; fails if it exists.
    async fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file, read-only or for reading and writing.
    async fn open(&self, path: &Path, writable: bool) -> io::Result<Self::File>;
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates the directory and its missing parents (like `mkdir -p`).
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Entries of a directory, sorted by name.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    async fn exists(&self, path: &Path) -> io::Result<bool>;
}

#[allow(async_fn_in_trait)]
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: 'static {
    type Buf: IoBuf;
    type ReadBuf: Deref<Target = [u8]> + 'static;

    /// Writes the whole buffer at `offset` (both aligned to [`BLOCK_BYTES`]).
    async fn write_at(&self, buf: Self::Buf, offset: u64) -> io::Result<()>;
    /// [`write_at`](Self::write_at) of a buffer the caller keeps: the same bytes can be
    /// written many times without being made again (a segment's zero-fill writes one zero
    /// buffer over and over).
    async fn write_shared_at(&self, buf: Rc<Self::Buf>, offset: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `offset` (any alignment); fewer only at end of file.
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// [`write_at`](Self::write_at) that completes only once the range written (and the
    /// metadata needed to read it back) is durable: write + fdatasync's guarantee for that
    /// range, in one I/O (`O_DSYNC`). Other writes to the file are not made durable by it.
    async fn write_durable_at(&self, buf: Self::Buf, offset: u64) -> io::Result<()>;
    /// fdatasync: makes every completed write to this file durable.
    async fn sync_data(&self) -> io::Result<()>;
    /// Preallocates the file to `len` bytes (its size becomes at least `len`; new bytes read
    /// as zero).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn len(&self) -> io::Result<u64>;
    async fn close(self) -> io::Result<()>;
}

/// Writes `bytes` to `path` durably and atomically: temp file, write, fdatasync, rename over
/// `path`, fsync the parent directory. A crash leaves either the old file or the new one.
pub async fn write_file_atomic<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    if storage.exists(&tmp).await? {
        storage.remove_file(&tmp).await?;
    }
    let file = storage.create_new(&tmp).await?;
    let padded = crate::format::align_up(bytes.len() as u64, BLOCK_BYTES) as usize;
    let mut buf = storage.alloc_buf(padded.max(BLOCK_BYTES as usize));
    buf.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.trim_to(padded.max(BLOCK_BYTES as usize));
    file.write_at(buf, 0).await?;
    // O_DIRECT forces whole blocks; the logical length is recorded by the file's own header
    // (every tern metadata file carries its length), so the zero tail is harmless.
    file.sync_data().await?;
    file.close().await?;
    storage.rename(&tmp, path).await?;
    storage.sync_dir(dir).await
}

/// Reads a whole file (small metadata and index files).
pub async fn read_file<S: Storage>(storage: &S, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path, false).await?;
    let len = file.len().await?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    let data = file.read_at(0, len).await?;
    let out = data.to_vec();
    file.close().await?;
    Ok(out)
}
