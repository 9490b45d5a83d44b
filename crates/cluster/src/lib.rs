//! # grove-cluster
//!
//! Shared state and the tasks that change it.
//!
//! # Layout
//! - [`metastore`]: the [`metastore::MetaStore`] trait and its embedded implementation.
//! - [`segments`]: segment descriptors as stored, and reading them back.
//! - [`deep_storage`]: where published segment files live.
//! - [`task`]: running a batch ingestion: build, upload, publish in one transaction.

pub mod deep_storage;
pub mod error;
pub mod metastore;
pub mod segments;
pub mod task;

pub use error::{Error, Result};
