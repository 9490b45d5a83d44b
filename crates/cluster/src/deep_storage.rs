//! Deep storage: the durable home of published segment files, through `object_store`:
//! a local (or mounted) directory by default, or an S3-compatible bucket. Files are
//! immutable once stored; a path is written once and only deleted when its segment is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Upload and download piece size.
const CHUNK: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct DeepStorage {
    store: Arc<dyn ObjectStore>,
    /// Where relative paths start inside `store`.
    prefix: ObjectPath,
    /// How the user named it, for messages.
    url: String,
    /// The directory, when deep storage is one on this machine.
    local_root: Option<PathBuf>,
}

impl DeepStorage {
    /// Deep storage in a local directory, created if missing.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::Invalid(format!("deep storage {}: {e}", root.display())))?;
        Ok(DeepStorage {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            url: format!("file://{}", root.display()),
            local_root: Some(root),
        })
    }

    /// Deep storage in this process's memory: nothing survives it. A real object
    /// store all the same (not a local directory): what tests of the remote path use.
    pub fn in_memory() -> Self {
        DeepStorage {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: ObjectPath::default(),
            url: "memory://".into(),
            local_root: None,
        }
    }

    /// Deep storage named by a URL: `file:///path` or `s3://bucket/prefix`. S3
    /// settings come from `options` (keys as in `object_store`'s `AmazonS3ConfigKey`:
    /// `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, ...)
    /// and from the usual `AWS_*` environment variables.
    pub fn from_url(url: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Invalid(format!("deep storage URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "file" => {
                if !options.is_empty() {
                    return Err(Error::Invalid(format!(
                        "deep storage {url} takes no options (got {})",
                        options.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                let path = parsed.to_file_path().map_err(|()| {
                    Error::Invalid(format!("deep storage URL {url:?} is not a local path"))
                })?;
                Self::local(path)
            }
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(url);
                for (key, value) in options {
                    let key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                        Error::Invalid(format!("deep storage {url}: unknown S3 option {key:?}"))
                    })?;
                    builder = builder.with_config(key, value);
                }
                let store = builder
                    .build()
                    .map_err(|e| Error::Invalid(format!("deep storage {url}: {e}")))?;
                Ok(DeepStorage {
                    store: Arc::new(store),
                    prefix: ObjectPath::from(parsed.path().trim_matches('/')),
                    url: url.to_string(),
                    local_root: None,
                })
            }
            other => Err(Error::Invalid(format!(
                "deep storage URL {url:?}: unsupported scheme {other:?} (use file:// or s3://)"
            ))),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local file behind relative `path`, when deep storage is a local directory
    /// (and `path` stays inside it).
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        let inside = !path.starts_with('/') && !path.split('/').any(|p| p == "..");
        self.local_root
            .as_ref()
            .filter(|_| inside)
            .map(|root| root.join(path))
    }

    fn location(&self, path: &str) -> Result<ObjectPath> {
        let relative = ObjectPath::parse(path)
            .map_err(|e| Error::Invalid(format!("deep storage path {path:?}: {e}")))?;
        Ok(self.prefix.parts().chain(relative.parts()).collect())
    }

    fn failed(&self, what: &str, path: &str, e: impl std::fmt::Display) -> Error {
        Error::Store(format!("deep storage {}: {what} {path}: {e}", self.url))
    }

    /// Stores the local `file` at relative `path`. A path that is taken is an error:
    /// stored files are never replaced. The upload becomes visible only when complete.
    /// In local deep storage on the same file system, `file` (immutable from now on) is
    /// hard-linked instead of copied.
    pub async fn store(&self, file: &Path, path: &str) -> Result<()> {
        let location = self.location(path)?;
        if let Some(target) = self.local_path(path) {
            let linked = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::hard_link(file, &target));
            match linked {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Invalid(format!(
                        "{path} exists already in deep storage {}",
                        self.url
                    )));
                }
                // Another file system, or links not allowed: copied below.
                Err(_) => {}
            }
        }
        match self.store.head(&location).await {
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{path} exists already in deep storage {}",
                    self.url
                )));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.failed("checking", path, e)),
        }
        let mut input = tokio::fs::File::open(file)
            .await
            .map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| self.failed("uploading", path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let copied: Result<()> = async {
            loop {
                let n = input
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| self.failed("uploading", path, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = copied {
            // Nothing half-uploaded is left behind.
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.failed("uploading", path, e))?;
        Ok(())
    }

    /// Downloads relative `path` to the local file `dest`: written under a temporary
    /// name, checked against `crc32`, then renamed, so `dest` is never a bad copy.
    pub async fn fetch(&self, path: &str, dest: &Path, crc32: u32) -> Result<()> {
        let location = self.location(path)?;
        let tmp = dest.with_extension("download");
        let io = |e| Error::io(format!("writing {}", tmp.display()), e);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut stream = self
            .store
            .get(&location)
            .await
            .map_err(|e| self.failed("downloading", path, e))?
            .into_stream();
        let mut crc = crc32fast::Hasher::new();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| self.failed("downloading", path, e))?;
            crc.update(&piece);
            out.write_all(&piece).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        drop(out);
        let crc = crc.finalize();
        if crc != crc32 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Error::Invalid(format!(
                "{path} in deep storage {} has CRC-32 {crc:08x}, its descriptor says {crc32:08x}",
                self.url
            )));
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
    }

    /// Deletes relative `path`; a path that is already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.location(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("deleting", path, e)),
        }
    }
}

/// CRC-32 of a whole local file, computed off the async threads.
pub async fn file_crc(path: &Path) -> Result<u32> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                return Ok(crc.finalize());
            }
            crc.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| Error::Store(format!("checking a file: {e}")))?
}

impl DeepStorage {
    /// A verified local copy of relative `path` at `dest`: an intact file there is
    /// kept, anything else is (re)downloaded. Fails if the stored file does not
    /// match `crc32` either.
    pub async fn copy_verified(&self, path: &str, dest: &Path, crc32: u32) -> Result<()> {
        match file_crc(dest).await {
            Ok(crc) if crc == crc32 => return Ok(()),
            Ok(_) => tracing::warn!(
                "{}: the local copy is corrupt; fetching it again",
                dest.display()
            ),
            Err(_) => {}
        }
        self.fetch(path, dest, crc32).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_are_verified_refetched_when_damaged_and_never_left_bad() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("segment.bin");
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&source, &data).unwrap();
        let crc = crc32fast::hash(&data);
        let deep = DeepStorage::in_memory();
        deep.store(&source, "ds/v1/s.grove").await.unwrap();
        let err = deep.store(&source, "ds/v1/s.grove").await.unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");

        let copy = dir.path().join("cache/s.grove");
        deep.copy_verified("ds/v1/s.grove", &copy, crc)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), data);
        // A damaged copy is fetched again.
        let mut bytes = data.clone();
        bytes[1234] ^= 0x10;
        std::fs::write(&copy, &bytes).unwrap();
        deep.copy_verified("ds/v1/s.grove", &copy, crc)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), data);
        // A stored file that does not match its checksum is refused and not kept.
        let other = dir.path().join("cache/other.grove");
        let err = deep
            .copy_verified("ds/v1/s.grove", &other, crc ^ 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("s.grove")],
            "no bad copy is left"
        );
        deep.delete("ds/v1/s.grove").await.unwrap();
        deep.delete("ds/v1/s.grove").await.unwrap();
        assert!(
            deep.copy_verified("ds/v1/s.grove", &other, crc)
                .await
                .is_err()
        );
    }

    #[test]
    fn paths_cannot_leave_a_local_root() {
        let dir = tempfile::tempdir().unwrap();
        let deep = DeepStorage::local(dir.path()).unwrap();
        assert!(deep.local_path("ds/v1/s.grove").is_some());
        assert!(deep.local_path("/etc/passwd").is_none());
        assert!(deep.local_path("ds/../../x").is_none());
        let err = DeepStorage::from_url("ftp://x/y", &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }
}
