//! The repair quarantine: every byte repair removes is copied here first.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::repair::RepairReport;
use crate::engine::{sync_dir_std, QUARANTINE_DIR};
use crate::error::{Error, Result};
use crate::recovery::now_unix_ms;

/// `DIR/quarantine/<unix ms>-repair/`: every byte repair removes is copied here first, with
/// a `MANIFEST` naming its source, offset, length, checksum and why.
pub(super) struct Quarantine {
    root: PathBuf,
    pub(super) dir: Option<PathBuf>,
    lines: Vec<String>,
}

impl Quarantine {
    pub(super) fn new(root: &Path) -> Self {
        Quarantine {
            root: root.to_path_buf(),
            dir: None,
            lines: Vec::new(),
        }
    }

    pub(super) fn dir(&mut self) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let base = self.root.join(QUARANTINE_DIR);
        let mut d = base.join(format!("{}-repair", now_unix_ms()));
        let mut n = 1;
        while d.exists() {
            d = base.join(format!("{}-repair-{n}", now_unix_ms()));
            n += 1;
        }
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        sync_dir_std(&base)?;
        sync_dir_std(&self.root)?;
        self.dir = Some(d.clone());
        Ok(d)
    }

    pub(super) fn copy_file(&mut self, src: &Path, shard: u32, why: &str) -> Result<()> {
        let len = std::fs::metadata(src).map_err(|e| Error::io(src, e))?.len();
        let name = format!(
            "shard-{shard}-{}",
            src.file_name()
                .map_or("file".into(), |n| n.to_string_lossy().into_owned())
        );
        self.copy(src, &name, 0, len, why)
    }

    /// Moves `src` into the quarantine (a rename: no extra space, which matters when the
    /// file is what filled the disk) and fsyncs both directories.
    pub(super) fn move_file(&mut self, src: &Path, name: &str, why: &str) -> Result<()> {
        let dir = self.dir()?;
        let dst = dir.join(name);
        let len = std::fs::metadata(src).map_err(|e| Error::io(src, e))?.len();
        std::fs::rename(src, &dst).map_err(|e| Error::io(src, e))?;
        sync_dir_std(&dir)?;
        if let Some(parent) = src.parent() {
            sync_dir_std(parent)?;
        }
        self.lines.push(format!(
            "file={name} source={} moved len={len} reason={}",
            src.display(),
            why.replace('\n', " ")
        ));
        Ok(())
    }

    pub(super) fn copy_region(
        &mut self,
        src: &Path,
        shard: u32,
        segment: u64,
        from: u64,
        to: u64,
        why: &str,
    ) -> Result<()> {
        let name = format!("shard-{shard}-segment-{segment}-offset-{from}.bin");
        self.copy(src, &name, from, to, why)
    }

    pub(super) fn copy(
        &mut self,
        src: &Path,
        name: &str,
        from: u64,
        to: u64,
        why: &str,
    ) -> Result<()> {
        let dir = self.dir()?;
        let dst = dir.join(name);
        let mut input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
        input
            .seek(SeekFrom::Start(from))
            .map_err(|e| Error::io(src, e))?;
        let mut out = std::fs::File::create(&dst).map_err(|e| Error::io(&dst, e))?;
        let mut left = to.saturating_sub(from);
        let mut copied = 0u64;
        let mut crc = 0u32;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let got = input
                .read(&mut buf[..want])
                .map_err(|e| Error::io(src, e))?;
            if got == 0 {
                break;
            }
            out.write_all(&buf[..got]).map_err(|e| Error::io(&dst, e))?;
            crc = crate::format::crc32c_append(crc, &buf[..got]);
            left -= got as u64;
            copied += got as u64;
        }
        out.sync_all().map_err(|e| Error::io(&dst, e))?;
        sync_dir_std(&dir)?;
        self.lines.push(format!(
            "file={name} source={} offset={from} len={copied} crc32c={crc:08x} reason={}",
            src.display(),
            why.replace('\n', " ")
        ));
        Ok(())
    }

    pub(super) fn finish(&mut self, report: &RepairReport) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let mut text = format!(
            "# tern repair at unix ms {}\n# data directory {}\n",
            now_unix_ms(),
            self.root.display()
        );
        for l in &self.lines {
            text.push_str(l);
            text.push('\n');
        }
        for l in &report.losses {
            text.push_str(&format!(
                "loss shard={} group={} first_index={} last_index={} why={}\n",
                l.shard, l.group, l.first_index, l.last_index, l.why
            ));
        }
        for r in &report.regions {
            text.push_str(&format!(
                "region shard={} segment={} offset={} len={} reason={}\n",
                r.shard, r.segment, r.offset, r.bytes, r.reason
            ));
        }
        let path = dir.join("MANIFEST");
        let tmp = dir.join("MANIFEST.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir_std(&dir)
    }
}
