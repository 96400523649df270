//! Where a node keeps state that must survive a crash: the configuration protocol's promises
//! and accepted values, and the newest committed configuration.
//!
//! [`FileCell`] writes a file under the data directory atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory), so a crash leaves either the
//! old state or the new one. [`MemCell`] keeps bytes in memory with the same contract; the
//! simulator hands a node the same `MemCell` across restarts, which is its "disk".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A durable byte cell: `store` returns only once the bytes would survive a crash.
pub trait DurableCell: Send + Sync + 'static {
    fn load(&self) -> io::Result<Option<Vec<u8>>>;
    fn store(&self, bytes: &[u8]) -> io::Result<()>;
    /// Where it lives, for messages.
    fn describe(&self) -> String;
}

/// A file, replaced atomically.
#[derive(Debug)]
pub struct FileCell {
    path: PathBuf,
}

impl FileCell {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl DurableCell for FileCell {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    OpenOptions::new().read(true).open(d)?.sync_all()
}

/// Memory that outlives the node holding it (share the `MemCell` with the next incarnation).
/// Without a data directory, a node uses a fresh one: a restart then forgets everything.
#[derive(Debug, Clone, Default)]
pub struct MemCell {
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl MemCell {
    pub fn new() -> Self {
        Self::default()
    }
}

impl DurableCell for MemCell {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_cell_replaces_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cell = FileCell::new(dir.path().join("state"));
        assert_eq!(cell.load().unwrap(), None);
        cell.store(b"one").unwrap();
        cell.store(b"two").unwrap();
        assert_eq!(cell.load().unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!dir.path().join("state.tmp").exists());
    }
}
