//! Production storage: glommio DMA files (O_DIRECT, io_uring).
//!
//! Directory operations (create, rename, remove, list) are rare and short; they use blocking
//! std calls on the shard thread rather than a round trip through the ring. Everything on the
//! append path (write, fdatasync, read) goes through io_uring.

use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::{DirEntry, IoBuf, Storage, StorageFile, BLOCK_BYTES};
use crate::error::errno_text;

/// glommio DMA files on a real file system. Must be used on a glommio executor thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

/// glommio's error for a failed file operation reads `op: Pre-allocate space path: Some(…)
/// with fd: Some(8)`; an operator needs what failed and the errno's name. Callers add the
/// file (`Error::io(path, …)`), so the message here is only the operation and the cause:
/// `pre-allocate space failed: ENOSPC (No space left on device)`. The error kind is kept.
fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::EnhancedIoError { source, op, .. } => {
            io::Error::new(source.kind(), describe_failure(op, &source))
        }
        other => io::Error::from(other),
    }
}

/// `<operation> failed: <ERRNO> (<description>)`.
fn describe_failure(op: &str, source: &io::Error) -> String {
    format!("{} failed: {}", op.to_lowercase(), errno_text(source))
}

impl IoBuf for DmaBuffer {
    fn as_bytes(&self) -> &[u8] {
        DmaBuffer::as_bytes(self)
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        DmaBuffer::as_bytes_mut(self)
    }
    fn trim_to(&mut self, len: usize) {
        self.trim_to_size(len)
    }
}

pub struct DmaStorageFile {
    file: DmaFile,
    /// A second handle on the same open file with `O_DSYNC`, for durable writes; opened on
    /// the first one (most files never need it).
    dsync: std::cell::OnceCell<Rc<DmaFile>>,
}

impl DmaStorageFile {
    fn new(file: DmaFile) -> Self {
        DmaStorageFile {
            file,
            dsync: std::cell::OnceCell::new(),
        }
    }

    /// The `O_DSYNC` handle, opened through `/proc/self/fd` so that it is the same inode
    /// even if the file was renamed since it was opened (segments are prepared under a
    /// temporary name).
    async fn dsync_handle(&self) -> io::Result<Rc<DmaFile>> {
        if let Some(f) = self.dsync.get() {
            return Ok(f.clone());
        }
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(&path)
            .await
            .map_err(to_io)?;
        // Two first writes in flight may both open one; the second is closed again.
        match self.dsync.set(Rc::new(f)) {
            Ok(()) => {}
            Err(extra) => {
                if let Ok(f) = Rc::try_unwrap(extra) {
                    f.close().await.map_err(to_io)?;
                }
            }
        }
        Ok(self.dsync.get().expect("set just above").clone())
    }
}

impl Storage for DmaStorage {
    type Buf = DmaBuffer;
    type File = DmaStorageFile;

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        assert!(
            (len as u64).is_multiple_of(BLOCK_BYTES),
            "unaligned DMA buffer length {len}"
        );
        let mut buf = glommio::allocate_dma_buffer(len);
        // Buffers may come from a recycled pool: never write stale bytes as padding.
        buf.as_bytes_mut().fill(0);
        buf
    }

    fn alloc_buf_for_overwrite(&self, len: usize) -> DmaBuffer {
        assert!(
            (len as u64).is_multiple_of(BLOCK_BYTES),
            "unaligned DMA buffer length {len}"
        );
        glommio::allocate_dma_buffer(len)
    }

    async fn create_new(&self, path: &Path) -> io::Result<DmaStorageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        check_alignment(&file, path)?;
        Ok(DmaStorageFile::new(file))
    }

    async fn open(&self, path: &Path, writable: bool) -> io::Result<DmaStorageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        check_alignment(&file, path)?;
        Ok(DmaStorageFile::new(file))
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // glommio opens directories relative to nothing: a relative path fails with EBADF.
        let dir = std::path::absolute(dir)?;
        let d = glommio::io::Directory::open(&dir).await.map_err(to_io)?;
        let synced = d.sync().await.map_err(to_io);
        let closed = d.close().await.map_err(to_io);
        synced.and(closed)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type()?.is_dir();
            out.push(DirEntry { name, is_dir });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
}

/// The format aligns batches to [`BLOCK_BYTES`]; a device whose O_DIRECT alignment does not
/// divide it cannot hold a tern WAL.
fn check_alignment(file: &DmaFile, path: &Path) -> io::Result<()> {
    if !BLOCK_BYTES.is_multiple_of(file.alignment()) {
        return Err(io::Error::other(format!(
            "{}: device needs {}-byte O_DIRECT alignment, tern writes {BLOCK_BYTES}-byte blocks",
            path.display(),
            file.alignment()
        )));
    }
    Ok(())
}

impl StorageFile for DmaStorageFile {
    type Buf = DmaBuffer;
    type ReadBuf = ReadResult;

    async fn write_at(&self, buf: DmaBuffer, offset: u64) -> io::Result<()> {
        let len = buf.len();
        assert!(offset.is_multiple_of(BLOCK_BYTES) && (len as u64).is_multiple_of(BLOCK_BYTES));
        let written = self.file.write_at(buf, offset).await.map_err(to_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {offset}"),
            ));
        }
        Ok(())
    }

    async fn write_shared_at(&self, buf: Rc<DmaBuffer>, offset: u64) -> io::Result<()> {
        let len = buf.len();
        assert!(offset.is_multiple_of(BLOCK_BYTES) && (len as u64).is_multiple_of(BLOCK_BYTES));
        let written = self.file.write_rc_at(buf, offset).await.map_err(to_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {offset}"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, offset: u64, len: usize) -> io::Result<ReadResult> {
        if offset.is_multiple_of(BLOCK_BYTES) && (len as u64).is_multiple_of(BLOCK_BYTES) {
            self.file.read_at_aligned(offset, len).await.map_err(to_io)
        } else {
            self.file.read_at(offset, len).await.map_err(to_io)
        }
    }

    async fn write_durable_at(&self, buf: DmaBuffer, offset: u64) -> io::Result<()> {
        let len = buf.len();
        assert!(offset.is_multiple_of(BLOCK_BYTES) && (len as u64).is_multiple_of(BLOCK_BYTES));
        let handle = self.dsync_handle().await?;
        let written = handle.write_at(buf, offset).await.map_err(to_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {offset}"),
            ));
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn len(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    async fn close(self) -> io::Result<()> {
        let dsync = match self.dsync.into_inner().map(Rc::try_unwrap) {
            Some(Ok(f)) => f.close().await.map_err(to_io),
            // Still shared by a write in flight: closed when that ends (glommio closes a
            // dropped file in the background).
            Some(Err(_)) | None => Ok(()),
        };
        let main = self.file.close().await.map_err(to_io);
        main.and(dsync)
    }
}

/// Settles glommio's per-device "can this device do polled I/O?" probe on a file that has
/// data, before the WAL opens anything.
///
/// glommio decides it once per device, the first time a DMA file is opened, by reading the
/// file's first block through the polled ring: `EOPNOTSUPP` means no. On a file that is new
/// and empty (a fresh data directory's first segment) the read ends at end-of-file without
/// reaching the device, looks like success, and every later read on that device fails with
/// `EOPNOTSUPP`. Opening a file with a block of data first gives the probe a real read.
///
/// `shard` names the probe file, so executors probing the same directory at once do not
/// remove each other's file.
pub async fn probe_iopoll(dir: &Path, shard: u32) -> crate::Result<()> {
    let dir = std::path::absolute(dir).map_err(|e| crate::Error::io(dir, e))?;
    let path = dir.join(format!(".iopoll-probe-{shard}"));
    std::fs::write(&path, vec![0u8; BLOCK_BYTES as usize])
        .map_err(|e| crate::Error::io(&path, e))?;
    let opened = OpenOptions::new().read(true).dma_open(&path).await;
    let result = match opened {
        Ok(f) => f
            .close()
            .await
            .map_err(|e| crate::Error::io(&path, to_io(e))),
        Err(e) => Err(crate::Error::io(&path, to_io(e))),
    };
    // The file held nothing; it is not part of the data directory's format, so no directory
    // fsync is owed for it.
    let removed = std::fs::remove_file(&path).map_err(|e| crate::Error::io(&path, e));
    result.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glommio_failures_read_as_operation_errno_and_text() {
        let e = glommio::GlommioError::<()>::EnhancedIoError {
            source: io::Error::from_raw_os_error(libc::ENOSPC),
            op: "Pre-allocate space",
            path: Some("/d/shard-0/x.wal".into()),
            fd: Some(8),
        };
        let io = to_io(e);
        assert_eq!(io.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            io.to_string(),
            "pre-allocate space failed: ENOSPC (No space left on device)"
        );
    }
}
