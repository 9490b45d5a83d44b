//! Test fixtures for every section's tests: a minimal valid spec, edited in place and
//! parsed against a temporary directory holding its input file.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::IngestionSpec;
use crate::error::Result;

/// A fresh directory under the system temp dir, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(files: &[&str]) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "grove-spec-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = TempDir(std::env::temp_dir().join(unique));
        fs::create_dir_all(&dir.0).unwrap();
        for file in files {
            let path = dir.0.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "{}\n").unwrap();
        }
        dir
    }

    pub(super) fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The smallest valid spec: one string dimension, one listed JSON file `data.json`.
pub(super) fn minimal() -> Value {
    json!({
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": "wiki",
                "dimensionsSpec": {"dimensions": ["page"]}
            },
            "ioConfig": {
                "inputSource": {"type": "local", "files": ["data.json"]},
                "inputFormat": {"type": "json"}
            }
        }
    })
}

/// Inserts or replaces `value` at a JSON pointer whose parent object exists.
pub(super) fn set(spec: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    parent.insert(key.to_string(), value);
}

pub(super) fn remove(spec: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    parent.remove(key);
}

pub(super) fn parse(spec: &Value, dir: &TempDir) -> Result<IngestionSpec> {
    IngestionSpec::from_json(&spec.to_string(), &dir.0)
}

/// Parses `minimal()` after `edit`, against a directory holding `data.json`.
pub(super) fn parse_edited(edit: impl FnOnce(&mut Value)) -> Result<IngestionSpec> {
    let dir = TempDir::new(&["data.json"]);
    let mut spec = minimal();
    edit(&mut spec);
    parse(&spec, &dir)
}

pub(super) fn error_of(edit: impl FnOnce(&mut Value)) -> String {
    match parse_edited(edit) {
        Ok(spec) => panic!("expected an error, parsed {spec:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn assert_contains(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "{message:?} should contain {expected:?}"
    );
}
