//! `grove quickstart`: the sample dataset, ingested and ready to query.

use std::io::IsTerminal;
use std::path::Path;

use grove_cluster::segments;
use grove_sql::Engine;
use grove_sql::output::Format;
use grove_sql::repl::{Repl, run_statement};

use crate::data_dir::DataDir;
use crate::{CliResult, ingest, sample};

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
    let present = {
        let store = dir.open_for_writing()?;
        !segments::load(store.as_ref(), Some(sample::DATASOURCE))
            .await?
            .is_empty()
    };
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
        ingest::run(&spec, data_dir).await?;
    }
    let engine = Engine::new(dir.open_for_reading()?, dir.deep_storage())?;
    for example in EXAMPLES {
        println!("\ngrove> {example};");
        run_statement(&engine, example, Format::Table, &mut std::io::stdout()).await?;
    }
    if std::io::stdin().is_terminal() {
        println!();
        Repl::new(&engine, Format::Table).run().await?;
    } else {
        println!(
            "\nQuery it yourself with: grove sql --data-dir {}",
            data_dir.display()
        );
    }
    Ok(())
}
