//! End-to-end tests, one binary: the CLI on a data directory, and a real cluster
//! (etcd + grove processes).

mod cancel;
mod cli;
mod cluster;
mod druid_native;
mod druid_sql;
mod flight_sql;
mod forged;
mod indexing;
mod kafka;
mod large_answers;
mod postgres;
mod s3_input;
mod streaming;
mod tpch;
