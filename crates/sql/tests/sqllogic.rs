//! SQL behaviour, in `.slt` files under `tests/slt/`.
//!
//! Every file runs three times. The *reference* run is plain DataFusion over the raw
//! input files (set up by `onlyif reference` statements), computing each answer
//! independently of Grove's ingestion, segments and scan. The *grove* runs ingest the
//! same files with `INGEST 'spec.json'` statements (`onlyif grove`) and query the
//! segments: once in one process reading them itself (label `direct`), once through a
//! broker and two historicals exchanging plan fragments over Flight (label
//! `cluster`). Every run must produce the expected results written in the file, so
//! every expected result is one the reference engine agrees with; plan shapes, which
//! only Grove has, are pinned with `onlyif cluster`.
//!
//! `${DATA}` in a statement stands for `tests/slt/data`. Set `GROVE_SLT_COMPLETE=1` to
//! fill in expected results from the reference engine (then review the diff).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::{EmbeddedStore, MetaStore};
use grove_cluster::task::run_batch;
use grove_segment::spec::IngestionSpec;
use grove_sql::local::{LocalCluster, LocalOptions};
use grove_sql::{Engine, Session};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

fn err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt/data")
}

fn substitute(sql: &str) -> String {
    sql.replace("${DATA}", &data_dir().display().to_string())
}

/// Where a Grove run's queries go.
enum Deployment {
    /// One process reading the segments itself.
    Direct(Box<Engine>),
    /// A broker over two historicals, all in this process, fragments over loopback
    /// Flight (the cluster's query path) or handed over in the process (`grove
    /// start`'s).
    Cluster(LocalCluster),
}

/// Grove over a fresh data directory.
struct GroveDb {
    deployment: Deployment,
    /// One session per file, as a client connection would have.
    session: Session,
    store: Arc<dyn MetaStore>,
    deep: DeepStorage,
    dir: Arc<tempfile::TempDir>,
    ingestions: u32,
}

impl GroveDb {
    fn direct() -> Self {
        let (dir, store, deep) = Self::storage();
        let engine = Engine::direct(Arc::clone(&store), deep.clone());
        GroveDb {
            session: engine.session(),
            deployment: Deployment::Direct(Box::new(engine)),
            store,
            deep,
            dir,
            ingestions: 0,
        }
    }

    async fn cluster(in_process: bool) -> Self {
        let (dir, store, deep) = Self::storage();
        let options = LocalOptions {
            historicals: 2,
            capacity: None,
            period: Duration::from_millis(100),
            http_address: "in-process".into(),
            fragment_deadline: Duration::from_secs(60),
            cache_bytes: 16 << 20,
            fragments_in_process: in_process,
            secret: grove_sql::auth::ClusterSecret::generate(),
        };
        let cluster = LocalCluster::start(store.clone(), deep.clone(), dir.path(), options)
            .await
            .expect("local cluster");
        GroveDb {
            session: cluster.engine.session(),
            deployment: Deployment::Cluster(cluster),
            store,
            deep,
            dir,
            ingestions: 0,
        }
    }

    fn storage() -> (Arc<tempfile::TempDir>, Arc<dyn MetaStore>, DeepStorage) {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let store: Arc<dyn MetaStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("meta")).expect("store"));
        let deep = DeepStorage::local(dir.path().join("deep")).expect("deep storage");
        (dir, store, deep)
    }

    fn engine(&self) -> &Engine {
        match &self.deployment {
            Deployment::Direct(engine) => engine,
            Deployment::Cluster(cluster) => &cluster.engine,
        }
    }

    async fn ingest(&mut self, spec: &str) -> Result<u64, DbError> {
        let spec = IngestionSpec::from_file(&data_dir().join(spec)).map_err(err)?;
        // Versions must grow from one ingestion to the next, as task start times do.
        self.ingestions += 1;
        let version = format!("2030-01-01T00:00:{:02}.000Z", self.ingestions);
        let outcome = run_batch(
            &spec,
            self.store.as_ref(),
            &self.deep,
            &self.dir.path().join("tmp"),
            &version,
            &mut |_| {},
        )
        .await
        .map_err(err)?;
        // A cluster answers once both historicals serve every segment: queries see
        // all of the data, and plans place segments the same way every time.
        if let Deployment::Cluster(cluster) = &self.deployment {
            cluster
                .wait_served(2, Duration::from_secs(60))
                .await
                .map_err(err)?;
        }
        Ok(outcome.progress.rows_written)
    }
}

#[async_trait::async_trait]
impl AsyncDB for GroveDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = substitute(sql);
        if let Some(spec) = sql.trim().strip_prefix("INGEST ") {
            let spec = spec.trim().trim_end_matches(';').trim_matches('\'');
            return Ok(DBOutput::StatementComplete(self.ingest(spec).await?));
        }
        let batches = self.session.execute(&sql).await.map_err(err)?;
        if sql
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("EXPLAIN ")
        {
            return Ok(physical_plan_lines(&batches));
        }
        Ok(rows(&batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "grove"
    }
}

/// DataFusion over the raw files.
struct ReferenceDb {
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl AsyncDB for ReferenceDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let batches = self
            .ctx
            .sql(&substitute(sql))
            .await
            .map_err(err)?
            .collect()
            .await
            .map_err(err)?;
        Ok(rows(&batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "reference"
    }
}

/// `EXPLAIN`'s physical plan, a row per operator. The runner collapses whitespace, so
/// each level of indentation is written as a `.`.
fn physical_plan_lines(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let mut rows = Vec::new();
    for batch in batches {
        let (Some(kinds), Some(plans)) = (
            batch.column(0).as_string_opt::<i32>(),
            batch.column(1).as_string_opt::<i32>(),
        ) else {
            continue;
        };
        for (kind, plan) in kinds.iter().zip(plans.iter()) {
            if kind != Some("physical_plan") {
                continue;
            }
            for line in plan
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let text = line.trim_start();
                let depth = (line.len() - text.len()) / 2;
                rows.push(vec![format!("{}{text}", ".".repeat(depth))]);
            }
        }
    }
    DBOutput::Rows {
        types: vec![DefaultColumnType::Text],
        rows,
    }
}

/// Results as text, the same way for both engines: NULL as `NULL`, empty strings as
/// `(empty)`, floats rounded to 6 decimals (the two engines add in different orders).
fn rows(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let Some(first) = batches.first() else {
        return DBOutput::Rows {
            types: vec![],
            rows: vec![],
        };
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if t.is_integer() => DefaultColumnType::Integer,
            t if t.is_floating() => DefaultColumnType::FloatingPoint,
            _ => DefaultColumnType::Text,
        })
        .collect();
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), row))
                    .collect(),
            );
        }
    }
    DBOutput::Rows { types, rows: out }
}

fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    let float = match array.data_type() {
        DataType::Float64 => Some(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => Some(f64::from(array.as_primitive::<Float32Type>().value(row))),
        _ => None,
    };
    if let Some(v) = float {
        let text = format!("{v:.6}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return if text == "-0" {
            "0".into()
        } else {
            text.to_string()
        };
    }
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array, &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|e| format!("<{e}>"));
    if text.is_empty() {
        "(empty)".into()
    } else {
        text
    }
}

async fn run_file(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/slt/{name}.slt"));
    let reference = || {
        let mut runner = Runner::new(|| async {
            Ok(ReferenceDb {
                ctx: SessionContext::new(),
            })
        });
        runner.add_label("reference");
        runner
    };
    if std::env::var_os("GROVE_SLT_COMPLETE").is_some() {
        reference()
            .update_test_file(
                &path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .expect("completing expected results");
    }
    reference()
        .run_file_async(&path)
        .await
        .unwrap_or_else(|e| panic!("reference run of {name}: {e}"));

    // (label, its run, a broker with historicals: over Flight or in process)
    let deployments = [
        ("direct", "direct", None),
        ("cluster", "cluster over Flight", Some(false)),
        ("cluster", "cluster in process", Some(true)),
    ];
    for (label, run, cluster) in deployments {
        let mut grove = Runner::new(move || async move {
            Ok(match cluster {
                Some(in_process) => GroveDb::cluster(in_process).await,
                None => GroveDb::direct(),
            })
        });
        grove.add_label("grove");
        grove.add_label(label);
        grove
            .run_file_async(&path)
            .await
            .unwrap_or_else(|e| panic!("grove ({run}) run of {name}: {e}"));
    }
}

macro_rules! slt {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_file(stringify!($name)).await;
        }
    )*};
}

slt!(
    basics,
    filters,
    time,
    rollup,
    replace_append,
    plans,
    druid,
    druid_tutorials
);

fn single_i64(batches: &[RecordBatch]) -> i64 {
    let column = batches[0].column(0);
    column
        .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
        .map(|a| a.value(0))
        .expect("one BIGINT")
}

/// A query on one day opens (memory-maps) only that day's segments.
#[tokio::test]
async fn a_time_range_opens_only_the_segments_that_overlap_it() {
    let mut db = GroveDb::direct();
    db.ingest("wiki.json").await.unwrap();
    let csv = std::fs::read_to_string(data_dir().join("wiki.csv")).unwrap();
    let march_2 = csv.lines().filter(|l| l.starts_with("2024-03-02")).count() as i64;

    let day = "__time >= TIMESTAMP '2024-03-02' AND __time < TIMESTAMP '2024-03-03'";
    let count = db
        .session
        .execute(&format!("SELECT COUNT(*) FROM wiki WHERE {day}"))
        .await
        .unwrap();
    assert_eq!(single_i64(&count), march_2);

    let opened = db
        .engine()
        .segment_cache()
        .expect("a local engine")
        .open_count() as i64;
    let of_day = "SELECT COUNT(*) FROM sys.segments WHERE start = '2024-03-02T00:00:00.000Z'";
    let of_day = single_i64(&db.session.execute(of_day).await.unwrap());
    let all = single_i64(
        &db.session
            .execute("SELECT COUNT(*) FROM sys.segments")
            .await
            .unwrap(),
    );
    assert!(of_day > 0 && of_day < all);
    assert_eq!(opened, of_day, "only the day's segments are opened");

    let grouped =
        format!("EXPLAIN SELECT channel, SUM(added) FROM wiki WHERE {day} GROUP BY channel");
    let plan = db.session.execute(&grouped).await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!("SegmentScanExec: segments={of_day},")),
        "{text}"
    );
}

/// A session's views are its own; datasources can be neither shadowed nor dropped, and
/// no statement reaches the server's files.
#[tokio::test]
async fn sessions_keep_their_views_apart() {
    let mut db = GroveDb::direct();
    db.ingest("wiki.json").await.unwrap();
    let rows = db.session.execute("SELECT COUNT(*) FROM wiki").await;
    let rows = single_i64(&rows.unwrap());

    let script = "CREATE VIEW busy AS SELECT channel, COUNT(*) AS n FROM wiki GROUP BY channel;\n\
                  SELECT SUM(n) FROM busy; SET datafusion.execution.batch_size = 100";
    let (_, summed) = db.session.script(script).await.unwrap();
    assert_eq!(single_i64(&summed), rows, "the script answers its query");

    let other = db.engine().session();
    let unseen = other.execute("SELECT * FROM busy").await.unwrap_err();
    assert!(unseen.to_string().contains("busy"), "{unseen}");

    let refused = [
        ("CREATE VIEW wiki AS SELECT 1", "already exists"),
        ("CREATE OR REPLACE VIEW wiki AS SELECT 1", "is a datasource"),
        ("DROP TABLE wiki", "is a datasource"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/hostname'",
            "CREATE EXTERNAL TABLE is not supported",
        ),
        ("COPY (SELECT 1) TO '/tmp/out.csv'", "DML not supported"),
        ("SELECT 1; SELECT 2", "several statements"),
    ];
    for (statement, why) in refused {
        let error = db.session.execute(statement).await.unwrap_err().to_string();
        assert!(error.contains(why), "{statement}: {error}");
    }
    let still = db.session.execute("SELECT COUNT(*) FROM wiki").await;
    assert_eq!(single_i64(&still.unwrap()), rows);

    db.session.execute("DROP VIEW busy").await.unwrap();
    assert!(db.session.execute("SELECT * FROM busy").await.is_err());
}

/// TPC-H writes `interval '90' day (3)`: the precision bounds the digits of the value.
#[tokio::test]
async fn interval_leading_precision_is_accepted_when_the_value_fits() {
    let db = GroveDb::direct();
    let shifted = db
        .session
        .execute("SELECT CAST(date '1998-12-01' - interval '90' day (3) AS VARCHAR)")
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&shifted)
        .unwrap()
        .to_string();
    assert!(text.contains("1998-09-02"), "{text}");
    let explained = db
        .session
        .execute("EXPLAIN SELECT date '1998-12-01' - interval '90' day (3)")
        .await;
    assert!(explained.is_ok(), "{explained:?}");

    let too_long = db
        .session
        .execute("SELECT date '1998-12-01' - interval '1000' day (3)")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        too_long.contains("more digits than its precision"),
        "{too_long}"
    );
}

/// A hash join of large answers from the same historicals: the broker reads the build
/// side while the probe side's three answers per historical wait, unread, each with
/// more than its flow-control window. Each answer has a Flight connection of its own,
/// so the waiting ones cannot stall the build side. (Sharing one HTTP/2 connection,
/// their unread frames held the connection's window: this join, like TPC-H Q18,
/// hung until the fragment deadline.)
#[tokio::test]
async fn a_join_reads_its_build_side_while_large_probe_answers_wait() {
    let mut db = GroveDb::cluster(false).await;
    db.ingest("wiki.json").await.unwrap();
    // ~700 KB per row: every scan sends each historical's half in ~25 MB, and the
    // build side needs its wide column (the join key).
    let wide = "SELECT page, repeat(page, 70000) AS wide FROM wiki";
    let sql = format!(
        "SELECT COUNT(*), SUM(CAST(LENGTH(p.wide) AS BIGINT)) \
         FROM ({wide} UNION ALL {wide} UNION ALL {wide}) p \
         JOIN ({wide}) b ON p.wide = b.wide"
    );
    let answer = tokio::time::timeout(Duration::from_secs(300), db.session.execute(&sql))
        .await
        .expect("the join finishes")
        .unwrap();

    let csv = std::fs::read_to_string(data_dir().join("wiki.csv")).unwrap();
    let mut pages: std::collections::HashMap<String, i64> = Default::default();
    for line in csv.lines().skip(1) {
        *pages
            .entry(line.split(',').nth(2).unwrap().to_string())
            .or_default() += 1;
    }
    let rows: i64 = pages.values().map(|c| 3 * c * c).sum();
    let length: i64 = pages
        .iter()
        .map(|(page, c)| 3 * c * c * page.len() as i64 * 70000)
        .sum();
    let counted = answer[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let summed = answer[0]
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    assert_eq!((counted.value(0), summed.value(0)), (rows, length));
}
