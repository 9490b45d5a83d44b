//! The cluster crate's integration tests, one binary: ingestion end to end, and the
//! MetaStore suite against a real etcd.

mod etcd_store;
mod ingest;
