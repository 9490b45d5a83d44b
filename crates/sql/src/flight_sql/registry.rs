//! What the Flight SQL service remembers between calls: login tokens, sessions,
//! prepared statements (each under a random id, forgotten when idle too long or, past
//! [`MOST`] of a kind, least recently used first), and the queries running now, which
//! a cancel request finds by their id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use tokio_util::sync::CancellationToken;

/// How long an unused token, session or prepared statement is kept.
pub(super) const IDLE: Duration = Duration::from_secs(3600);

/// The most tokens, sessions or prepared statements kept.
pub(super) const MOST: usize = 10_000;

/// Values under random ids.
pub(super) struct Registry<T> {
    entries: Mutex<HashMap<String, (T, Instant)>>,
    idle: Duration,
    most: usize,
}

impl<T: Clone> Registry<T> {
    pub(super) fn new(idle: Duration, most: usize) -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
            idle,
            most,
        }
    }

    /// Keeps `value` under a new id, and forgets what has been idle too long.
    pub(super) fn insert(&self, value: T) -> String {
        self.insert_at(value, Instant::now())
    }

    fn insert_at(&self, value: T, now: Instant) -> String {
        let id = random_id();
        self.insert_as(id.clone(), value, now);
        id
    }

    /// Keeps `value` under `id`, and forgets what has been idle too long and, when
    /// full, what was used least recently.
    pub(super) fn insert_as(&self, id: String, value: T, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.retain(|_, (_, used)| now.duration_since(*used) < self.idle);
        if entries.len() >= self.most {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(id, (value, now));
    }

    /// The value under `id`, unless it was removed or has been idle too long.
    pub(super) fn get(&self, id: &str) -> Option<T> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<T> {
        let mut entries = self.entries.lock().ok()?;
        let (value, used) = entries.get_mut(id)?;
        if now.duration_since(*used) >= self.idle {
            entries.remove(id);
            return None;
        }
        *used = now;
        Some(value.clone())
    }

    pub(super) fn remove(&self, id: &str) -> Option<T> {
        Some(self.entries.lock().ok()?.remove(id)?.0)
    }
}

/// 128 random bits, in hex.
pub(super) fn random_id() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The queries of the FlightInfos handed out, by the id in their ticket: pending
/// (no fetch yet), sending rows, or done; forgotten as [`Registry`] entries are.
pub(super) struct Running {
    queries: Mutex<HashMap<String, Query>>,
}

struct Query {
    token: CancellationToken,
    /// The physical plan made for its FlightInfo, for its first fetch.
    planned: Option<Planned>,
    /// Fetches sending its rows now.
    fetches: usize,
    /// Whether a fetch has run to its end.
    done: bool,
    used: Instant,
}

/// A statement planned at `GetFlightInfo`, kept for its `DoGet`.
pub(super) struct Planned {
    pub(super) plan: Arc<dyn ExecutionPlan>,
    /// The session's context it runs with.
    pub(super) task: Arc<TaskContext>,
    pub(super) user: Option<String>,
}

/// What a cancel request did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cancelled {
    /// The query stops now, or its fetch will refuse to start.
    Yes,
    /// It has already run, or was never handed out here.
    TooLate,
}

/// One fetch of a query's rows; dropping it ends its registration.
pub(super) struct Fetch {
    running: Arc<Running>,
    id: String,
    pub(super) token: CancellationToken,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            queries: Mutex::new(HashMap::new()),
        }
    }
}

impl Running {
    /// Remembers the query of a FlightInfo handed out, so that it can be cancelled
    /// before its rows are fetched.
    pub(super) fn register(&self, id: &str, planned: Planned) {
        let now = Instant::now();
        let Ok(mut queries) = self.queries.lock() else {
            return;
        };
        queries.retain(|_, q| q.fetches > 0 || now.duration_since(q.used) < IDLE);
        if queries.len() >= MOST {
            let oldest = queries
                .iter()
                .filter(|(_, q)| q.fetches == 0)
                .min_by_key(|(_, q)| q.used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                queries.remove(&oldest);
            }
        }
        let mut query = Query::new(now);
        query.planned = Some(planned);
        queries.insert(id.to_string(), query);
    }

    /// The plan made for query `id`'s FlightInfo, for the first fetch of the user it
    /// was made for: a second fetch, or another user's, plans again.
    pub(super) fn take_plan(&self, id: &str, user: &Option<String>) -> Option<Planned> {
        let mut queries = self.queries.lock().ok()?;
        let query = queries.get_mut(id)?;
        match &query.planned {
            Some(planned) if planned.user == *user => query.planned.take(),
            _ => None,
        }
    }

    /// Registers a fetch of query `id` (fetches of one ticket share its token);
    /// `None` when the query was cancelled before.
    pub(super) fn start(self: &Arc<Self>, id: &str) -> Option<Fetch> {
        let token = match self.queries.lock() {
            Ok(mut queries) => {
                // A ticket another broker handed out is not registered here.
                let query = queries
                    .entry(id.to_string())
                    .or_insert_with(|| Query::new(Instant::now()));
                if query.token.is_cancelled() {
                    return None;
                }
                query.fetches += 1;
                query.used = Instant::now();
                query.token.clone()
            }
            Err(_) => CancellationToken::new(),
        };
        Some(Fetch {
            running: Arc::clone(self),
            id: id.to_string(),
            token,
        })
    }

    /// Cancels query `id`.
    pub(super) fn cancel(&self, id: &str) -> Cancelled {
        let Ok(queries) = self.queries.lock() else {
            return Cancelled::TooLate;
        };
        match queries.get(id) {
            Some(query) if query.fetches > 0 || !query.done => {
                query.token.cancel();
                Cancelled::Yes
            }
            _ => Cancelled::TooLate,
        }
    }

    /// How many queries are sending rows.
    pub(super) fn len(&self) -> usize {
        self.queries
            .lock()
            .map(|q| q.values().filter(|q| q.fetches > 0).count())
            .unwrap_or(0)
    }
}

impl Query {
    fn new(now: Instant) -> Query {
        Query {
            token: CancellationToken::new(),
            planned: None,
            fetches: 0,
            done: false,
            used: now,
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Ok(mut queries) = self.running.queries.lock()
            && let Some(query) = queries.get_mut(&self.id)
        {
            query.fetches -= 1;
            query.done = true;
            query.used = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan that reads nothing, as a FlightInfo would have left it.
    fn planned() -> Planned {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        Planned {
            plan: Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema)),
            task: Arc::new(TaskContext::default()),
            user: None,
        }
    }

    #[test]
    fn entries_are_forgotten_when_removed_or_idle_too_long() {
        let registry = Registry::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let a = registry.insert_at("a", at(0));
        let b = registry.insert_at("b", at(0));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(registry.get_at(&a, at(0)), Some("a"));
        assert_eq!(registry.remove(&a), Some("a"));
        assert_eq!(registry.get_at(&a, at(0)), None);
        assert_eq!(registry.get_at(&b, at(6)), Some("b"));
        // Used 6 s ago: still there; then idle for 10 s: gone.
        assert_eq!(registry.get_at(&b, at(12)), Some("b"));
        assert_eq!(registry.get_at(&b, at(22)), None);
        assert_eq!(registry.get_at("nope", at(0)), None);
        // An insert sweeps out what has been idle too long.
        let c = registry.insert_at("c", at(30));
        registry.insert_at("d", at(41));
        assert_eq!(registry.entries.lock().unwrap().len(), 1);
        assert_eq!(registry.get_at(&c, at(41)), None);
    }

    #[test]
    fn a_full_registry_forgets_the_least_recently_used() {
        let registry = Registry::new(Duration::from_secs(100), 2);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let a = registry.insert_at("a", at(0));
        let b = registry.insert_at("b", at(1));
        assert_eq!(registry.get_at(&a, at(2)), Some("a"));
        let c = registry.insert_at("c", at(3));
        assert_eq!(registry.get_at(&b, at(3)), None);
        assert_eq!(registry.get_at(&a, at(3)), Some("a"));
        assert_eq!(registry.get_at(&c, at(3)), Some("c"));
    }

    #[test]
    fn a_plan_goes_to_the_first_fetch_of_its_user_only() {
        let running = Running::default();
        let mut mine = planned();
        mine.user = Some("ann".into());
        running.register("q", mine);
        assert!(running.take_plan("q", &Some("bob".into())).is_none());
        assert!(running.take_plan("q", &None).is_none());
        assert!(running.take_plan("q", &Some("ann".into())).is_some());
        assert!(running.take_plan("q", &Some("ann".into())).is_none());
        assert!(running.take_plan("unknown", &None).is_none());
    }

    #[test]
    fn a_cancel_reaches_every_fetch_of_a_query_and_stops_later_ones() {
        let running = Arc::new(Running::default());
        assert_eq!(running.cancel("q"), Cancelled::TooLate);
        running.register("q", planned());
        let first = running.start("q").unwrap();
        let second = running.start("q").unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running.cancel("q"), Cancelled::Yes);
        assert!(first.token.is_cancelled() && second.token.is_cancelled());
        drop(first);
        assert_eq!(running.len(), 1);
        drop(second);
        assert_eq!(running.len(), 0);
        assert!(
            running.start("q").is_none(),
            "a cancelled query starts no fetch"
        );
    }

    #[test]
    fn a_query_cancelled_before_its_fetch_never_runs_and_a_finished_one_is_too_late() {
        let running = Arc::new(Running::default());
        running.register("pending", planned());
        assert_eq!(running.cancel("pending"), Cancelled::Yes);
        assert!(running.start("pending").is_none());
        running.register("finished", planned());
        drop(running.start("finished").unwrap());
        assert_eq!(running.cancel("finished"), Cancelled::TooLate);
        assert_eq!(running.len(), 0);
    }
}
