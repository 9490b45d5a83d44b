//! What the Flight SQL service remembers between calls: login tokens, sessions,
//! prepared statements (each under a random id, forgotten when idle too long), and
//! the queries running now, which a cancel request finds by their id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long an unused token, session or prepared statement is kept.
pub(super) const IDLE: Duration = Duration::from_secs(3600);

/// Values under random ids.
pub(super) struct Registry<T> {
    entries: Mutex<HashMap<String, (T, Instant)>>,
    idle: Duration,
}

impl<T: Clone> Registry<T> {
    pub(super) fn new(idle: Duration) -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// Keeps `value` under a new id, and forgets what has been idle too long.
    pub(super) fn insert(&self, value: T) -> String {
        self.insert_at(value, Instant::now())
    }

    fn insert_at(&self, value: T, now: Instant) -> String {
        let id = random_id();
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (_, used)| now.duration_since(*used) < self.idle);
            entries.insert(id.clone(), (value, now));
        }
        id
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

/// The queries whose rows are being sent, by the id in their ticket.
#[derive(Default)]
pub(super) struct Running {
    queries: Mutex<HashMap<String, (CancellationToken, usize)>>,
}

/// One fetch of a query's rows; dropping it ends its registration.
pub(super) struct Fetch {
    running: Arc<Running>,
    id: String,
    pub(super) token: CancellationToken,
}

impl Running {
    /// Registers a fetch of query `id`; fetches of one ticket share its token.
    pub(super) fn start(self: &Arc<Self>, id: &str) -> Fetch {
        let token = match self.queries.lock() {
            Ok(mut queries) => {
                let (token, count) = queries.entry(id.to_string()).or_default();
                *count += 1;
                token.clone()
            }
            Err(_) => CancellationToken::new(),
        };
        Fetch {
            running: Arc::clone(self),
            id: id.to_string(),
            token,
        }
    }

    /// Cancels query `id`; false when no fetch of it runs.
    pub(super) fn cancel(&self, id: &str) -> bool {
        let Ok(queries) = self.queries.lock() else {
            return false;
        };
        match queries.get(id) {
            Some((token, _)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// How many queries are sending rows.
    pub(super) fn len(&self) -> usize {
        self.queries.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Ok(mut queries) = self.running.queries.lock()
            && let Some((_, count)) = queries.get_mut(&self.id)
        {
            *count -= 1;
            if *count == 0 {
                queries.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_forgotten_when_removed_or_idle_too_long() {
        let registry = Registry::new(Duration::from_secs(10));
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
    fn a_cancel_reaches_every_fetch_of_a_query_while_one_runs() {
        let running = Arc::new(Running::default());
        assert!(!running.cancel("q"));
        let first = running.start("q");
        let second = running.start("q");
        assert_eq!(running.len(), 1);
        assert!(running.cancel("q"));
        assert!(first.token.is_cancelled() && second.token.is_cancelled());
        drop(first);
        assert_eq!(running.len(), 1);
        drop(second);
        assert_eq!(running.len(), 0);
        assert!(!running.cancel("q"));
    }
}
