//! Configuration of the server roles: one TOML file per role (examples under
//! `config/`), every key also a command-line flag and a `GROVE_*` environment
//! variable. A flag (or variable) wins over the file, the file over the default.
//! Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use grove_cluster::rules::Period;
use serde::Deserialize;

use crate::CliResult;

/// Where segments are stored for good.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeepStorageConfig {
    /// `file:///path` or `s3://bucket/prefix`; default `file://{data_dir}/deep`.
    pub url: Option<String>,
    /// S3 settings (`endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`, ...); `AWS_*` environment variables are read too.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `grove coordinator`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// etcd endpoints, comma-separated (required).
    pub etcd: Option<String>,
    /// The secret every node of the cluster shares (16 characters or more): internal
    /// calls carry it and are refused without it. Prefer `GROVE_CLUSTER_SECRET` to a
    /// file others may read.
    pub cluster_secret: Option<String>,
    /// HTTP address for rules and status; default 127.0.0.1:8081.
    pub http_addr: Option<String>,
    /// This node's id; default from the host name and HTTP port.
    pub node_id: Option<String>,
    /// Time between duty runs, an ISO-8601 period; default PT5S.
    pub period: Option<String>,
    /// How long a vanished historical keeps its segments before they are placed
    /// elsewhere; default PT15M.
    pub replicant_lifetime: Option<String>,
    /// Most segments the balancer starts moving per run; default 5.
    pub max_segments_to_move: Option<usize>,
    /// Lease TTL: a dead leader is replaced after about this long; default PT3S.
    pub lease_ttl: Option<String>,
}

/// `grove historical`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoricalConfig {
    /// etcd endpoints, comma-separated (required).
    pub etcd: Option<String>,
    /// The secret every node of the cluster shares (16 characters or more): internal
    /// calls carry it and are refused without it. Prefer `GROVE_CLUSTER_SECRET` to a
    /// file others may read.
    pub cluster_secret: Option<String>,
    /// HTTP address for status; default 127.0.0.1:8084.
    pub http_addr: Option<String>,
    pub node_id: Option<String>,
    /// Local directory; the segment cache is `{data_dir}/segment-cache`.
    pub data_dir: Option<PathBuf>,
    /// The tier this historical belongs to; default `_default_tier`.
    pub tier: Option<String>,
    /// Most bytes of segments it holds, with K/M/G/T suffixes; default unlimited.
    pub capacity: Option<String>,
    /// Arrow Flight address for plan fragments; default 127.0.0.1:8083.
    pub flight_addr: Option<String>,
    /// Brokers query replicas on higher-priority historicals first; default 0.
    pub priority: Option<i32>,
    pub lease_ttl: Option<String>,
    pub deep_storage: Option<DeepStorageConfig>,
}

/// `grove overlord`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OverlordConfig {
    /// etcd endpoints, comma-separated (required).
    pub etcd: Option<String>,
    /// The secret every node of the cluster shares (16 characters or more): internal
    /// calls carry it and are refused without it. Prefer `GROVE_CLUSTER_SECRET` to a
    /// file others may read.
    pub cluster_secret: Option<String>,
    /// HTTP address of the task API; default 127.0.0.1:8090.
    pub http_addr: Option<String>,
    pub node_id: Option<String>,
    /// A dead leader is replaced after about this long; default PT3S.
    pub lease_ttl: Option<String>,
}

/// `grove worker` (Druid's MiddleManager).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// etcd endpoints, comma-separated (required).
    pub etcd: Option<String>,
    /// The secret every node of the cluster shares (16 characters or more): internal
    /// calls carry it and are refused without it. Prefer `GROVE_CLUSTER_SECRET` to a
    /// file others may read.
    pub cluster_secret: Option<String>,
    /// HTTP address (task logs, status); default 127.0.0.1:8091.
    pub http_addr: Option<String>,
    pub node_id: Option<String>,
    /// Local directory; tasks work in `{data_dir}/tasks`.
    pub data_dir: Option<PathBuf>,
    /// How many tasks run at once; default 2.
    pub capacity: Option<u32>,
    /// The category tasks may ask for with `context.category`; default none.
    pub category: Option<String>,
    pub lease_ttl: Option<String>,
    pub deep_storage: Option<DeepStorageConfig>,
}

/// A user of the SQL front ends (Postgres, Flight SQL, HTTP). With none configured,
/// nobody is asked for a password.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The stored password that `grove passwd` prints, never the password itself.
    pub password: String,
}

/// `grove broker`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// etcd endpoints, comma-separated (required).
    pub etcd: Option<String>,
    /// The secret every node of the cluster shares (16 characters or more): internal
    /// calls carry it and are refused without it. Prefer `GROVE_CLUSTER_SECRET` to a
    /// file others may read.
    pub cluster_secret: Option<String>,
    /// HTTP address for SQL and status; default 127.0.0.1:8888.
    pub http_addr: Option<String>,
    pub node_id: Option<String>,
    pub lease_ttl: Option<String>,
    /// Longest a SQL query may run unless the client sets its own limit (ISO-8601,
    /// e.g. PT5M); default no limit.
    pub query_timeout: Option<String>,
    /// Postgres wire protocol address; default 127.0.0.1:5433.
    pub pg_addr: Option<String>,
    /// Flight SQL address; default 127.0.0.1:8815.
    pub flight_addr: Option<String>,
    /// Who may query; default anyone, without a password.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// TLS: a PEM certificate chain (Postgres clients that ask for TLS get it; Flight
    /// SQL is served over TLS only) ...
    pub tls_cert: Option<PathBuf>,
    /// ... and its PEM private key.
    pub tls_key: Option<PathBuf>,
}

/// `grove start`: every role in one process on the embedded metadata store.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartConfig {
    pub data_dir: Option<PathBuf>,
    /// HTTP address (SQL, rules, status); default 127.0.0.1:8888.
    pub http_addr: Option<String>,
    /// How many historicals to run; default 1.
    pub historicals: Option<usize>,
    /// Capacity of each historical; default unlimited.
    pub capacity: Option<String>,
    pub period: Option<String>,
    /// Longest a SQL query may run unless the client sets its own limit (ISO-8601,
    /// e.g. PT5M); default no limit.
    pub query_timeout: Option<String>,
    /// Postgres wire protocol address; default 127.0.0.1:5433.
    pub pg_addr: Option<String>,
    /// Flight SQL address; default 127.0.0.1:8815.
    pub flight_addr: Option<String>,
    /// Who may query; default anyone, without a password.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// TLS: a PEM certificate chain (Postgres clients that ask for TLS get it; Flight
    /// SQL is served over TLS only) ...
    pub tls_cert: Option<PathBuf>,
    /// ... and its PEM private key.
    pub tls_key: Option<PathBuf>,
    pub deep_storage: Option<DeepStorageConfig>,
    /// How many ingestion tasks run at once; default 2.
    pub task_slots: Option<u32>,
}

/// Reads a role's TOML file.
pub fn load<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> CliResult<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("the config {}: {e}", path.display()).into())
}

pub fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Flags every server role takes.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonFlags {
    /// The role's TOML config file.
    #[arg(long, env = "GROVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "GROVE_ETCD")]
    pub etcd: Option<String>,
    /// HTTP listen address (port 0 picks a free port).
    #[arg(long, env = "GROVE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// This node's id in the cluster.
    #[arg(long, env = "GROVE_NODE_ID")]
    pub node_id: Option<String>,
    /// Lease TTL (ISO-8601 period, e.g. PT10S): a dead node is noticed after this.
    #[arg(long, env = "GROVE_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// The secret every node of the cluster shares; internal calls carry it.
    #[arg(long, env = "GROVE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
}

/// Flags of the roles that answer SQL clients: the broker and `grove start`.
#[derive(Debug, Clone, Default, Args)]
pub struct FrontEndFlags {
    /// Postgres wire protocol address (port 0 picks a free port).
    #[arg(long, env = "GROVE_PG_ADDR")]
    pub pg_addr: Option<String>,
    /// Flight SQL address (port 0 picks a free port).
    #[arg(long, env = "GROVE_FLIGHT_ADDR")]
    pub flight_addr: Option<String>,
    /// Longest a SQL query may run unless the client sets its own limit (e.g. PT5M).
    #[arg(long, env = "GROVE_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "GROVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "GROVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// Flags of the roles that read segments.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageFlags {
    /// Local directory (a historical's segment cache is {data_dir}/segment-cache).
    #[arg(long, env = "GROVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Deep storage URL (file:///path or s3://bucket/prefix); default {data_dir}/deep.
    #[arg(long, env = "GROVE_DEEP_STORAGE")]
    pub deep_storage: Option<String>,
}

/// A duration given as an ISO-8601 period of fixed length (`PT5S`, `PT15M`, `P1D`).
pub fn duration(text: &str, what: &str) -> CliResult<Duration> {
    let period = Period::parse(text).map_err(|e| format!("{what}: {e}"))?;
    if period.months != 0 {
        return Err(
            format!("{what}: {text} has months or years, which have no fixed length").into(),
        );
    }
    Ok(Duration::from_millis(period.millis.max(0) as u64))
}

/// Bytes with an optional K/M/G/T suffix (powers of 1024): `500M`, `10G`, `1048576`.
pub fn bytes(text: &str, what: &str) -> CliResult<u64> {
    let text = text.trim();
    let (number, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{what}: unknown size suffix in {text:?}").into()),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{what}: {text:?} is not a size (e.g. 500M, 10G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{what}: {text:?} is too large").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_example_config_parses_with_every_key_set() {
        let c: CoordinatorConfig = parse(&example("coordinator.toml")).unwrap();
        assert_eq!(c.etcd.as_deref(), Some("http://127.0.0.1:2379"));
        assert!(c.period.is_some() && c.replicant_lifetime.is_some());
        duration(c.replicant_lifetime.as_deref().unwrap(), "lifetime").unwrap();
        let h: HistoricalConfig = parse(&example("historical.toml")).unwrap();
        assert_eq!(h.tier.as_deref(), Some("_default_tier"));
        assert_eq!(h.flight_addr.as_deref(), Some("127.0.0.1:8083"));
        assert_eq!(h.priority, Some(0));
        assert_eq!(
            bytes(h.capacity.as_deref().unwrap(), "capacity").unwrap(),
            10 << 30
        );
        assert!(h.deep_storage.unwrap().url.unwrap().starts_with("file://"));
        let b: BrokerConfig = parse(&example("broker.toml")).unwrap();
        assert_eq!(b.http_addr.as_deref(), Some("127.0.0.1:8888"));
        let timeout = b.query_timeout.as_deref().unwrap();
        assert_eq!(duration(timeout, "t").unwrap(), Duration::from_secs(300));
        assert_eq!(b.pg_addr.as_deref(), Some("127.0.0.1:5433"));
        assert_eq!(b.flight_addr.as_deref(), Some("127.0.0.1:8815"));
        let users = b
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.password.as_str()));
        let users = grove_sql::auth::Users::new(users).unwrap();
        assert!(users.verify("alice", "change-me"));
        assert!(b.tls_cert.is_some() && b.tls_key.is_some());
        let s: StartConfig = parse(&example("start.toml")).unwrap();
        assert_eq!(s.historicals, Some(1));
        assert_eq!(s.task_slots, Some(2));
        assert_eq!(s.query_timeout.as_deref(), Some("PT5M"));
        assert_eq!(s.pg_addr.as_deref(), Some("127.0.0.1:5433"));
        assert_eq!(s.flight_addr.as_deref(), Some("127.0.0.1:8815"));
        assert!(s.users.is_empty());
        let o: OverlordConfig = parse(&example("overlord.toml")).unwrap();
        assert_eq!(o.http_addr.as_deref(), Some("127.0.0.1:8090"));
        assert_eq!(
            duration(o.lease_ttl.as_deref().unwrap(), "t").unwrap(),
            Duration::from_secs(3)
        );
        let w: WorkerConfig = parse(&example("worker.toml")).unwrap();
        assert_eq!(w.http_addr.as_deref(), Some("127.0.0.1:8091"));
        assert_eq!(w.capacity, Some(4));
        assert_eq!(w.category, None);
        assert!(w.deep_storage.unwrap().url.unwrap().starts_with("file://"));
        let supervisor =
            grove_segment::spec::KafkaSupervisorSpec::from_json(&example("kafka-supervisor.json"))
                .unwrap();
        assert_eq!(supervisor.datasource, "clicks");
        assert_eq!(supervisor.bootstrap_servers, "127.0.0.1:9092");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse::<HistoricalConfig>("tier = \"hot\"\ncapacty = \"1G\"").unwrap_err();
        assert!(err.contains("capacty"), "{err}");
        assert!(
            bytes("12Q", "capacity")
                .unwrap_err()
                .to_string()
                .contains("suffix")
        );
        assert!(duration("P1M", "period").is_err());
        assert_eq!(bytes("512k", "c").unwrap(), 512 * 1024);
        assert_eq!(duration("PT1M30S", "p").unwrap(), Duration::from_secs(90));
    }
}
