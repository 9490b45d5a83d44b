//! # grove-cluster
//!
//! Shared state, and the processes and tasks that change it.
//!
//! # Layout
//! - [`metastore`]: the [`metastore::MetaStore`] trait, its etcd and embedded
//!   implementations, and the suite both pass.
//! - [`session`]: a lease kept alive in the background.
//! - [`nodes`]: membership of live nodes.
//! - [`segments`]: segment descriptors as stored, and reading them back.
//! - [`rules`]: Druid's load/drop/broadcast rules.
//! - [`assignments`]: the coordinator's instructions and what historicals serve.
//! - [`election`]: one leader per role, and the fence its writes carry.
//! - [`coordinator`]: the leading coordinator's duties that place segments.
//! - [`historical`]: following assignments: download, verify, map, announce.
//! - [`indexer`]: the indexing service: overlord, workers, and the peon processes
//!   that run tasks.
//! - [`locks`]: time-chunk locks of ingestion tasks: grant, revoke, publish under them.
//! - [`lookups`]: Druid's lookups (named key-to-value maps) per tier.
//! - [`view`]: the broker's picture of the cluster, kept from watches.
//! - [`deep_storage`]: where published segment files live (`object_store`).
//! - [`kafka`]: reading Kafka partitions by explicit offset.
//! - [`inputs`]: a task's inputs as local files (fetching HTTP and S3 ones).
//! - [`stream_offsets`]: the stream offsets a datasource is published up to, moved
//!   only together with the segments built from them.
//! - [`supervisors`]: streaming supervisors as stored, one per datasource, with the
//!   history of their specs.
//! - [`task`]: running a batch ingestion: build, upload, publish.
//! - [`task_status`]: a task as the indexing service tracks it, and Druid's JSON for it.

pub mod assignments;
pub mod coordinator;
pub mod deep_storage;
pub mod election;
pub mod error;
pub mod historical;
pub mod indexer;
pub mod inputs;
pub mod kafka;
pub mod locks;
pub mod lookups;
pub mod metastore;
pub mod nodes;
pub mod rules;
pub mod segments;
pub mod session;
pub mod stream_offsets;
pub mod supervisors;
pub mod task;
pub mod task_status;
pub mod view;

pub use error::{Error, Result};
