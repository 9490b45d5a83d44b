//! The broker's per-segment result cache: what one fragment over one segment
//! returned, keyed by the fragment itself (its encoded plan, which names the segment,
//! its version and the intervals read). Segments are immutable and a replacement has
//! new ids, so an entry is never stale; it is only ever evicted, least recently used
//! first, once the cache holds more than its byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatch;

#[derive(Debug)]
pub struct ResultCache {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Vec<u8>, Entry>,
    /// Last use -> key: the oldest first.
    order: BTreeMap<u64, Vec<u8>>,
    clock: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    batches: Vec<RecordBatch>,
    bytes: usize,
    used: u64,
}

impl ResultCache {
    /// A cache of at most `budget` bytes of results.
    pub fn new(budget: usize) -> Self {
        ResultCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<RecordBatch>> {
        let mut state = self.state.lock().ok()?;
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(key)?;
        let before = std::mem::replace(&mut entry.used, now);
        let batches = entry.batches.clone();
        state.order.remove(&before);
        state.order.insert(now, key.to_vec());
        Some(batches)
    }

    pub fn put(&self, key: Vec<u8>, batches: Vec<RecordBatch>) {
        let bytes: usize = key.len()
            + batches
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>();
        if bytes > self.budget {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.clock += 1;
        let now = state.clock;
        if let Some(old) = state.entries.remove(&key) {
            state.order.remove(&old.used);
            state.bytes -= old.bytes;
        }
        while state.bytes + bytes > self.budget {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes -= evicted.bytes;
            }
        }
        state.bytes += bytes;
        state.order.insert(now, key.clone());
        state.entries.insert(
            key,
            Entry {
                batches,
                bytes,
                used: now,
            },
        );
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().map_or(0, |s| s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from_iter_values(0..n)) as _)])
            .unwrap()
    }

    #[test]
    fn least_recently_used_entries_go_first_and_the_budget_holds() {
        let one = batch(1000).get_array_memory_size() + 1;
        let cache = ResultCache::new(one * 2 + one / 2);
        cache.put(b"a".to_vec(), vec![batch(1000)]);
        cache.put(b"b".to_vec(), vec![batch(1000)]);
        assert!(
            cache.get(b"a").is_some(),
            "a is used again, b is now the oldest"
        );
        cache.put(b"c".to_vec(), vec![batch(1000)]);
        assert!(cache.get(b"b").is_none());
        assert_eq!(cache.get(b"a").unwrap()[0].num_rows(), 1000);
        assert!(cache.get(b"c").is_some());
        assert!(cache.bytes() <= one * 2 + one / 2);
        // Too big to ever fit: not cached, nothing evicted for it.
        cache.put(b"huge".to_vec(), vec![batch(100_000)]);
        assert!(cache.get(b"huge").is_none() && cache.get(b"a").is_some());
    }
}
