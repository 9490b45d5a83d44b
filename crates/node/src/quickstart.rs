//! `grove quickstart`: the sample dataset, ingested and ready to query.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use grove_cluster::segments;
use grove_sql::output::Format;
use grove_sql::repl::{Repl, run_statement};

use crate::data_dir::DataDir;
use crate::{CliResult, ingest, sample};
use grove_sql::local::{LocalCluster, LocalOptions};

const EXAMPLES: [&str; 3] = [
    "SELECT date_trunc('day', __time) AS day, COUNT(*) AS events, SUM(revenue) AS revenue \
     FROM events GROUP BY 1 ORDER BY 1",
    "SELECT country, COUNT(*) AS events FROM events \
     WHERE __time >= TIMESTAMP '2024-06-05' AND __time < TIMESTAMP '2024-06-06' \
     GROUP BY country ORDER BY events DESC LIMIT 5",
    "SELECT device, COUNT(DISTINCT user_id) AS users FROM events \
     WHERE referrer IS NOT NULL GROUP BY device ORDER BY users DESC",
];

pub async fn run(data_dir: &Path, rows: u64) -> CliResult<()> {
    let dir = DataDir::new(data_dir);
    let target = ingest::Target::open(data_dir, None, None).await?;
    let present = !segments::load(target.store.as_ref(), Some(sample::DATASOURCE))
        .await?
        .is_empty();
    if present {
        println!(
            "The sample datasource {:?} is already in {}.",
            sample::DATASOURCE,
            data_dir.display()
        );
    } else {
        let sample_dir = data_dir.join("sample");
        println!(
            "Generating {rows} sample rows in {} ...",
            sample_dir.display()
        );
        let spec = sample::write(&sample_dir, rows)?;
        ingest::run(&spec, &target).await?;
    }
    // The same roles as `grove start`, in this process, on the same store.
    let options = LocalOptions {
        historicals: 1,
        capacity: None,
        period: Duration::from_millis(200),
        http_address: "in-process".into(),
        fragment_deadline: crate::server::FRAGMENT_DEADLINE,
        cache_bytes: crate::server::RESULT_CACHE_BYTES,
        fragments_in_process: true,
        secret: grove_sql::auth::ClusterSecret::generate(),
    };
    let cluster = LocalCluster::start(target.store, dir.deep_storage()?, data_dir, options).await?;
    let loading = Instant::now();
    cluster.wait_served(1, Duration::from_secs(120)).await?;
    println!(
        "A coordinator, a broker and a historical are running; the historical loaded \
         the segments in {:.2} s.",
        loading.elapsed().as_secs_f64()
    );
    let session = cluster.engine.session();
    for example in EXAMPLES {
        println!("\ngrove> {example};");
        run_statement(&session, example, Format::Table, &mut std::io::stdout()).await?;
    }
    if std::io::stdin().is_terminal() {
        println!();
        Repl::new(&session, Format::Table).run().await?;
    } else {
        println!(
            "\nServe it with: grove start --data-dir {0}\n\
             or query the files directly with: grove sql --data-dir {0}",
            data_dir.display()
        );
    }
    cluster.stop().await;
    Ok(())
}
