//! The cluster crate's error type.

/// Errors from metadata, publishing and ingestion tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's mistake: a bad spec, a conflicting request.
    #[error("{0}")]
    Invalid(String),
    /// Another process holds what this one needs; retrying later may work.
    #[error("{0}")]
    Busy(String),
    #[error("metadata store: {0}")]
    Store(String),
    /// A write whose outcome is unknown: the store failed to answer and could not be
    /// asked afterwards. Nothing may be cleaned up on the assumption that it failed.
    #[error("metadata store: {0}")]
    Indeterminate(String),
    /// A watch asked for changes older than the store still remembers.
    #[error("metadata store: revision {requested} is compacted (oldest kept: {oldest})")]
    Compacted { requested: u64, oldest: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Segment(#[from] grove_segment::Error),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
