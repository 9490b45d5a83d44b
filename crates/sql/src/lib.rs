//! # grove-sql
//!
//! SQL over Grove's segments, on DataFusion.
//!
//! # Layout
//! - [`table`]: [`table::DatasourceTable`], one DataFusion table per datasource, which
//!   turns a scan into the visible segments and a `SegmentScanExec`.
//! - [`metadata`]: where the SQL layer learns what exists: the metadata store read
//!   directly, or a broker's cluster view (only served segments are queryable).
//! - [`catalog`]: per-datasource timelines and schemas; segment files opened on demand.
//! - [`cache`]: the broker's per-segment result cache.
//! - [`codec`]: plan fragments on the wire (datafusion-proto plus Grove's scan).
//! - [`distributed`]: the broker's scan, run on historicals with replica failover.
//! - [`fragment`]: the Flight ticket for fragments, and the historical's service.
//! - [`remote`]: the broker's side of fragments: segment references and the client.
//! - [`local`]: every role in one process (`grove start`, and tests).
//! - [`functions`]: Grove's versions of DataFusion functions (`date_part`), registered
//!   everywhere a plan runs.
//! - [`druid`]: Druid's SQL dialect: its functions, syntax and `INFORMATION_SCHEMA`.
//! - [`literals`]: decimal literals compared with DOUBLE columns as the doubles they
//!   denote.
//! - [`schema`]: the `public` (one table per datasource) and `sys` schemas.
//! - [`settings`]: Grove's session settings (`SET grove.use_cache = false`).
//! - [`engine`]: the session: refreshes the metadata and runs statements.
//! - [`postgres`]: the Postgres wire protocol front end, a session per connection.
//! - [`flight_sql`]: the Flight SQL front end, and the client `grove sql --connect`
//!   uses.
//! - [`druid_http`]: Druid's query APIs over HTTP (SQL).
//! - [`guard`]: what stops a running statement: a cancel request or its timeout.
//! - [`auth`]: users and their passwords, for every front end.
//! - [`tls`]: TLS for the front ends.
//! - [`output`]: renders results as a table, CSV or JSON.
//! - [`repl`]: the interactive `grove sql` shell.
//! - [`yielding`]: joins that loop without reading yield to the scheduler.
//! - [`semi_joins`]: semi and anti joins move below the inner joins they filter.

pub mod auth;
pub mod catalog;
pub mod distributed;
pub mod druid;
pub mod druid_http;
pub mod engine;
pub mod flight_sql;
pub mod functions;
pub mod guard;
pub mod literals;
pub mod local;
pub mod metadata;
pub mod output;
pub mod postgres;
pub mod repl;
pub mod schema;
pub mod semi_joins;
pub mod settings;
pub mod table;
pub mod tls;
pub mod yielding;

pub use engine::{Engine, Session};
