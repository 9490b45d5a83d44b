//! Deep storage: the durable home of published segment files. Files are immutable
//! once stored; a path is written once and only deleted when its segment is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Deep storage in a local (or mounted) directory.
#[derive(Debug, Clone)]
pub struct DeepStorage {
    root: PathBuf,
}

impl DeepStorage {
    pub fn local(root: impl Into<PathBuf>) -> Self {
        DeepStorage { root: root.into() }
    }

    /// Where the file at relative `path` lives.
    pub fn local_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Stores `file` at relative `path`, moving it when it is on the same file system.
    /// A path that is taken is an error: stored files are never replaced.
    pub fn store(&self, file: &Path, path: &str) -> Result<()> {
        let target = self.local_path(path);
        if target.exists() {
            return Err(Error::Invalid(format!(
                "{} exists already in deep storage",
                target.display()
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        if std::fs::rename(file, &target).is_ok() {
            return Ok(());
        }
        let tmp = target.with_extension("tmp");
        std::fs::copy(file, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &target))
            .map_err(|e| {
                Error::io(
                    format!("storing {} as {}", file.display(), target.display()),
                    e,
                )
            })
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        let target = self.local_path(path);
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("deleting {}", target.display()), e))
            }
            _ => Ok(()),
        }
    }
}
