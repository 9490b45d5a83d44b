//! The cluster crate's integration tests, one binary: ingestion end to end, the
//! MetaStore suite, and time-chunk locks raced on a real etcd.

mod etcd_store;
mod ingest;
mod locks;
