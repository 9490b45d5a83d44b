//! Grove's own session settings, next to DataFusion's: `SET grove.use_cache = false`
//! in SQL, or a Druid query context (`useCache`, `populateCache`) over HTTP.

use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::extensions_options;

extensions_options! {
    /// Settings under `grove.`.
    pub struct GroveSettings {
        /// Answer a segment from the broker's result cache when it holds the answer.
        pub use_cache: bool, default = true
        /// Keep each segment's answer in the broker's result cache.
        pub populate_cache: bool, default = true
        /// The most bytes of a join's build side sent to the historicals, so that
        /// the join runs next to the probe side's segments (at most 128 MiB, half
        /// the message limit, whatever is set); a larger one (or 0 for all) is
        /// joined on the broker.
        pub broadcast_bytes: usize, default = 32 * 1024 * 1024
        /// Run joins of two large sides whose answer is aggregated on the
        /// historicals, each joining and aggregating one hash slice of both sides
        /// (a shuffle stage); off, the broker joins them.
        pub shuffle: bool, default = true
    }
}

impl GroveSettings {
    /// The settings `options` hold, or the defaults.
    pub fn of(options: &ConfigOptions) -> GroveSettings {
        options
            .extensions
            .get::<GroveSettings>()
            .cloned()
            .unwrap_or_default()
    }
}

impl ConfigExtension for GroveSettings {
    const PREFIX: &'static str = "grove";
}
