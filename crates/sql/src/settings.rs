//! Grove's own session settings, next to DataFusion's: `SET grove.use_cache = false`
//! in SQL, or a Druid query context (`useCache`, `populateCache`) over HTTP.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Settings under `grove.`.
    pub struct GroveSettings {
        /// Answer a segment from the broker's result cache when it holds the answer.
        pub use_cache: bool, default = true
        /// Keep each segment's answer in the broker's result cache.
        pub populate_cache: bool, default = true
    }
}

impl ConfigExtension for GroveSettings {
    const PREFIX: &'static str = "grove";
}
