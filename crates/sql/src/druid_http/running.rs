//! The queries Druid's HTTP APIs are running, by id, so that `DELETE` can cancel one.
//! SQL (`sqlQueryId`) and native (`queryId`) queries share the ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// By id: the cancel token of the query running under it, and a number telling this
/// run of the id from a later one.
#[derive(Default)]
pub struct Running {
    queries: Mutex<HashMap<String, (u64, CancellationToken)>>,
    runs: AtomicU64,
    next_id: AtomicU64,
}

/// A query listed as running until this is dropped (its answer ends, in any way).
pub struct Registered {
    running: Arc<Running>,
    id: String,
    run: u64,
}

impl Running {
    /// The id a request gave, or a new one.
    pub fn id(&self, given: Option<String>) -> String {
        given.unwrap_or_else(|| format!("grove-{}", self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    /// Lists `id` as running; its token is cancelled by [`Running::cancel`]. Refused
    /// when a query of that id runs already.
    pub fn register(self: &Arc<Self>, id: &str) -> Result<(Registered, CancellationToken), String> {
        let token = CancellationToken::new();
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let mut queries = self
            .queries
            .lock()
            .map_err(|_| "the list of running queries is poisoned".to_string())?;
        if queries.contains_key(id) {
            return Err(format!("a query with id {id:?} is already running"));
        }
        queries.insert(id.to_string(), (run, token.clone()));
        let registered = Registered {
            running: Arc::clone(self),
            id: id.to_string(),
            run,
        };
        Ok((registered, token))
    }

    /// Cancels the query running as `id`; false when none does.
    pub fn cancel(&self, id: &str) -> bool {
        let found = self.queries.lock().ok().and_then(|mut q| q.remove(id));
        match found {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut queries) = self.running.queries.lock()
            && queries
                .get(&self.id)
                .is_some_and(|(run, _)| *run == self.run)
        {
            queries.remove(&self.id);
        }
    }
}
