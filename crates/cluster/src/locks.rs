//! Time-chunk locks: which task may write which intervals of a datasource.
//!
//! As Druid's overlord does, every ingestion task is granted a lock on each time chunk
//! it writes before it writes, and publishes only while it still holds them. The locks
//! live in the metadata store, so they survive an overlord's restart or failover: a
//! new leader reads them back.
//!
//! - An **exclusive** lock (a task that replaces data) conflicts with every
//!   overlapping lock of another task group. **Append** locks share a time chunk with
//!   other append locks on exactly that interval, and agree on its version. Tasks of
//!   one group (the sub-tasks of a parallel ingestion) never conflict with each other
//!   and share the group's version of an interval.
//! - A request that conflicts only with locks of lower priority (Druid's: realtime
//!   [`REALTIME_PRIORITY`], batch [`BATCH_PRIORITY`], compaction
//!   [`COMPACTION_PRIORITY`]) **revokes** them, unless one of them is publishing. A
//!   revoked lock stays, marked, so that its task learns it lost it; it blocks nobody.
//!   Any other conflict makes the request wait ([`Grant::Waiting`], naming the
//!   blockers).
//! - Before publishing, a task marks its locks `publishing` ([`begin_publishing`]),
//!   which nobody may revoke, and its publishing transaction compares each lock's
//!   revision ([`Held::guard`]): a task whose locks were revoked or released publishes
//!   nothing.
//!
//! Every change to a datasource's locks is one transaction that also rewrites the
//! datasource's lockbox key and compares its revision with the one the change was
//! decided on, so two overlords (a deposed leader that has not noticed yet, and the new
//! one) never grant conflicting locks from stale reads. Each change also carries the
//! caller's guard (an overlord's election fence), so a deposed leader changes nothing
//! at all.
//!
//! Keys: `/grove/locks/{datasource}/{start}_{end}_{task}` holds a [`TaskLock`] as JSON;
//! `/grove/lockbox/{datasource}` counts the changes to the datasource's locks.

use grove_segment::Interval;
use grove_segment::id::format_millis;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn, before_attempt, guard_lost};

/// Druid's default priority of realtime (streaming) tasks.
pub const REALTIME_PRIORITY: i32 = 75;
/// Druid's default priority of batch ingestion tasks.
pub const BATCH_PRIORITY: i32 = 50;
/// Druid's default priority of compaction tasks.
pub const COMPACTION_PRIORITY: i32 = 25;

/// The most locks one task may hold on a datasource: marking them publishing,
/// guarding the publication and releasing them are each one transaction with an
/// operation or compare per lock, and etcd refuses transactions of more than 128
/// (its default `--max-txn-ops`).
pub const MAX_LOCKS_PER_TASK: usize = 60;

/// How often a change is decided again after another change to the same datasource's
/// locks won the race, before giving up as [`Error::Busy`].
const ATTEMPTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockKind {
    /// The task replaces the interval's data with a new version.
    Exclusive,
    /// The task adds partitions to the interval's current version.
    Append,
}

/// A lock as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLock {
    pub task_id: String,
    pub group_id: String,
    pub datasource: String,
    pub interval: Interval,
    pub kind: LockKind,
    /// The version the task's segments of this interval get.
    pub version: String,
    pub priority: i32,
    /// Taken away by a task of higher priority: the holder must not publish.
    pub revoked: bool,
    /// The holder is publishing: nobody may revoke it.
    pub publishing: bool,
}

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub task_id: String,
    pub group_id: String,
    pub datasource: String,
    pub interval: Interval,
    pub kind: LockKind,
    pub priority: i32,
    /// The version to use when nobody the lock is shared with has chosen one: the
    /// task's own (an ISO timestamp of its start).
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Granted(TaskLock),
    /// Held by others that this request may not revoke; ask again later.
    Waiting {
        blockers: Vec<TaskLock>,
    },
}

/// A lock with the key and revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLock {
    pub key: String,
    pub revision: u64,
    pub lock: TaskLock,
}

/// A datasource's locks as of one lockbox revision.
struct Lockbox {
    key: String,
    /// The lockbox key's revision (0: never written) and change count when read.
    revision: u64,
    changes: u64,
    locks: Vec<StoredLock>,
}

fn locks_prefix(datasource: &str) -> String {
    format!("/grove/locks/{datasource}/")
}

fn lock_key(lock: &TaskLock) -> String {
    let kind = match lock.kind {
        LockKind::Exclusive => "exclusive",
        LockKind::Append => "append",
    };
    format!(
        "{}{}_{}_{kind}_{}",
        locks_prefix(&lock.datasource),
        format_millis(lock.interval.start),
        format_millis(lock.interval.end),
        lock.task_id
    )
}

fn encode(lock: &TaskLock) -> Result<Vec<u8>> {
    serde_json::to_vec(lock).map_err(|e| Error::Store(format!("encoding a lock: {e}")))
}

impl Lockbox {
    /// The lockbox key first, then the locks: a change between the two reads moves
    /// the lockbox past the revision read, and the transaction decided on them fails.
    async fn read(store: &dyn MetaStore, datasource: &str) -> Result<Lockbox> {
        let key = format!("/grove/lockbox/{datasource}");
        let (revision, changes) = match store.get(&key).await? {
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value).to_string();
                let changes = text
                    .parse()
                    .map_err(|_| Error::Store(format!("{key} holds {text:?}, not a count")))?;
                (kv.mod_revision, changes)
            }
            None => (0, 0),
        };
        // The prefix of `a` also covers a datasource named `a/b`.
        let locks = stored_locks(store, &locks_prefix(datasource))
            .await?
            .into_iter()
            .filter(|s| s.lock.datasource == datasource)
            .collect();
        Ok(Lockbox {
            key,
            revision,
            changes,
            locks,
        })
    }

    /// A transaction that applies only if nothing changed the locks since the read
    /// and `guard`'s compares hold.
    fn fenced(&self, guard: &Txn) -> Txn {
        guard
            .compares_only()
            .when_revision(self.key.clone(), self.revision)
            .put(
                self.key.clone(),
                (self.changes + 1).to_string().into_bytes(),
            )
    }

    fn of_task<'a>(&'a self, task_id: &'a str) -> impl Iterator<Item = &'a StoredLock> + 'a {
        self.locks.iter().filter(move |s| s.lock.task_id == task_id)
    }

    /// The version a new lock on `request.interval` must share: its group's, or, for
    /// an append, that of the other appenders there.
    fn shared_version(&self, request: &LockRequest) -> Option<String> {
        let same_interval = || {
            self.locks
                .iter()
                .filter(|s| !s.lock.revoked && s.lock.interval == request.interval)
        };
        same_interval()
            .find(|s| s.lock.group_id == request.group_id)
            .or_else(|| {
                same_interval()
                    .find(|s| request.kind == LockKind::Append && s.lock.kind == LockKind::Append)
            })
            .map(|s| s.lock.version.clone())
    }
}

/// Whether `held` stands in the way of `request`.
fn conflicts(held: &TaskLock, request: &LockRequest) -> bool {
    let shared = held.kind == LockKind::Append
        && request.kind == LockKind::Append
        && held.interval == request.interval;
    !held.revoked
        && held.group_id != request.group_id
        && held.interval.overlaps(&request.interval)
        && !shared
}

/// What one decision on a datasource's locks comes to.
enum Step<T> {
    /// Nothing to write: the answer is this.
    Done(T),
    /// Apply this transaction (made from [`Lockbox::fenced`]), then answer this.
    Apply(Txn, T),
}

/// Decides a change with `decide` on a fresh read of `datasource`'s locks and applies
/// it, deciding again after a lost race until it applies or the guard fails.
async fn change<T>(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    mut decide: impl FnMut(&Lockbox, Txn) -> Result<Step<T>>,
) -> Result<T> {
    for attempt in 0..ATTEMPTS {
        before_attempt(attempt).await;
        let lockbox = Lockbox::read(store, datasource).await?;
        match decide(&lockbox, lockbox.fenced(guard))? {
            Step::Done(answer) => return Ok(answer),
            Step::Apply(txn, answer) => {
                if store.txn(txn).await? {
                    return Ok(answer);
                }
            }
        }
        check_guard(store, guard).await?;
    }
    Err(raced(datasource))
}

/// Grants `request`, revoking locks of lower priority in its way, or says who it waits
/// for. Asking again for a lock the task holds answers that lock.
pub async fn acquire(store: &dyn MetaStore, guard: &Txn, request: &LockRequest) -> Result<Grant> {
    change(store, guard, &request.datasource, |lockbox, mut txn| {
        if let Some(held) = lockbox
            .of_task(&request.task_id)
            .find(|s| s.lock.interval == request.interval && s.lock.kind == request.kind)
        {
            if held.lock.revoked {
                return Err(revoked(&held.lock));
            }
            return Ok(Step::Done(Grant::Granted(held.lock.clone())));
        }
        if lockbox.of_task(&request.task_id).count() >= MAX_LOCKS_PER_TASK {
            return Err(Error::Invalid(format!(
                "task {} already holds {MAX_LOCKS_PER_TASK} locks on {}, the most one task may hold; \
                 use a coarser segmentGranularity",
                request.task_id, request.datasource
            )));
        }
        let in_the_way: Vec<&StoredLock> = lockbox
            .locks
            .iter()
            .filter(|s| conflicts(&s.lock, request))
            .collect();
        if in_the_way
            .iter()
            .any(|s| s.lock.priority >= request.priority || s.lock.publishing)
        {
            return Ok(Step::Done(Grant::Waiting {
                blockers: in_the_way.into_iter().map(|s| s.lock.clone()).collect(),
            }));
        }
        let lock = TaskLock {
            task_id: request.task_id.clone(),
            group_id: request.group_id.clone(),
            datasource: request.datasource.clone(),
            interval: request.interval,
            kind: request.kind,
            version: lockbox
                .shared_version(request)
                .unwrap_or_else(|| request.version.clone()),
            priority: request.priority,
            revoked: false,
            publishing: false,
        };
        for revoked in in_the_way {
            let mut taken = revoked.lock.clone();
            taken.revoked = true;
            txn = txn
                .when_revision(revoked.key.clone(), revoked.revision)
                .put(revoked.key.clone(), encode(&taken)?);
        }
        txn = txn.create(lock_key(&lock), encode(&lock)?);
        Ok(Step::Apply(txn, Grant::Granted(lock)))
    })
    .await
}

/// After a lost race: an error if it was lost to the guard rather than to another
/// change of the locks.
async fn check_guard(store: &dyn MetaStore, guard: &Txn) -> Result<()> {
    if store.txn(guard.compares_only()).await? {
        Ok(())
    } else {
        Err(guard_lost())
    }
}

fn revoked(lock: &TaskLock) -> Error {
    Error::Busy(format!(
        "task {}'s lock on {} of {} was revoked by a task of higher priority",
        lock.task_id, lock.interval, lock.datasource
    ))
}

fn raced(datasource: &str) -> Error {
    Error::Busy(format!(
        "the locks of {datasource} kept changing ({ATTEMPTS} attempts); try again"
    ))
}

/// The locks of `datasource` (every datasource's with `None`), with their revisions.
pub async fn list(store: &dyn MetaStore, datasource: Option<&str>) -> Result<Vec<StoredLock>> {
    match datasource {
        Some(datasource) => Ok(Lockbox::read(store, datasource).await?.locks),
        None => stored_locks(store, "/grove/locks/").await,
    }
}

async fn stored_locks(store: &dyn MetaStore, prefix: &str) -> Result<Vec<StoredLock>> {
    store
        .range(prefix)
        .await?
        .into_iter()
        .map(|kv| {
            let lock = serde_json::from_slice(&kv.value)
                .map_err(|e| Error::Store(format!("{}: {e}", kv.key)))?;
            Ok(StoredLock {
                key: kv.key,
                revision: kv.mod_revision,
                lock,
            })
        })
        .collect()
}

/// A task's locks, as it held them when it began publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(Vec<StoredLock>);

impl Held {
    /// Makes `txn` apply only if every lock is still exactly as it was held.
    pub fn guard(&self, txn: Txn) -> Txn {
        self.0.iter().fold(txn, |txn, held| {
            txn.when_revision(held.key.clone(), held.revision)
        })
    }

    pub fn locks(&self) -> impl Iterator<Item = &TaskLock> {
        self.0.iter().map(|s| &s.lock)
    }
}

/// Marks every lock `task_id` holds on `datasource` as publishing, so that none can be
/// revoked any more. Fails, changing nothing, if the task holds no lock or any of them
/// was revoked.
pub async fn begin_publishing(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    task_id: &str,
) -> Result<Held> {
    let marked = change(store, guard, datasource, |lockbox, mut txn| {
        let mine: Vec<&StoredLock> = lockbox.of_task(task_id).collect();
        if mine.is_empty() {
            return Err(Error::Invalid(format!(
                "task {task_id} holds no lock on {datasource}"
            )));
        }
        if let Some(lost) = mine.iter().find(|s| s.lock.revoked) {
            return Err(revoked(&lost.lock));
        }
        for held in &mine {
            let mut publishing = held.lock.clone();
            publishing.publishing = true;
            txn = txn
                .when_revision(held.key.clone(), held.revision)
                .put(held.key.clone(), encode(&publishing)?);
        }
        Ok(Step::Apply(txn, mine.len()))
    })
    .await?;
    // Read back for the revisions the publishing transaction compares: nobody but the
    // task's own release changes a publishing lock.
    let now = Lockbox::read(store, datasource).await?;
    let held: Vec<StoredLock> = now.of_task(task_id).cloned().collect();
    if held.len() != marked || held.iter().any(|s| !s.lock.publishing) {
        return Err(Error::Busy(format!(
            "task {task_id}'s locks on {datasource} were released while it began publishing"
        )));
    }
    Ok(Held(held))
}

/// Removes every lock `task_id` holds on `datasource` (the task ended); how many.
pub async fn release(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    task_id: &str,
) -> Result<usize> {
    change(store, guard, datasource, |lockbox, txn| {
        let mine: Vec<&StoredLock> = lockbox.of_task(task_id).collect();
        if mine.is_empty() {
            return Ok(Step::Done(0));
        }
        let txn = mine.iter().fold(txn, |txn, s| txn.delete(s.key.clone()));
        Ok(Step::Apply(txn, mine.len()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::EmbeddedStore;

    const DAY: i64 = 86_400_000;

    /// No guard: every write of these tests may apply.
    fn open() -> Txn {
        Txn::default()
    }

    fn days(from: i64, to: i64) -> Interval {
        Interval::new(from * DAY, to * DAY).unwrap()
    }

    fn request(task: &str, interval: Interval, kind: LockKind, priority: i32) -> LockRequest {
        LockRequest {
            task_id: task.into(),
            group_id: task.into(),
            datasource: "events".into(),
            interval,
            kind,
            priority,
            version: format!("v-{task}"),
        }
    }

    fn granted(grant: Grant) -> TaskLock {
        match grant {
            Grant::Granted(lock) => lock,
            Grant::Waiting { blockers } => panic!("waits for {blockers:?}"),
        }
    }

    fn blockers(grant: Grant) -> Vec<String> {
        match grant {
            Grant::Granted(lock) => panic!("granted {lock:?}"),
            Grant::Waiting { blockers } => blockers.into_iter().map(|l| l.task_id).collect(),
        }
    }

    #[tokio::test]
    async fn overlapping_replaces_wait_for_each_other_until_released() {
        let store = EmbeddedStore::in_memory();
        let a = request("a", days(0, 2), LockKind::Exclusive, BATCH_PRIORITY);
        let b = request("b", days(1, 3), LockKind::Exclusive, BATCH_PRIORITY);
        let c = request("c", days(2, 3), LockKind::Exclusive, BATCH_PRIORITY);
        let lock = granted(acquire(&store, &open(), &a).await.unwrap());
        assert_eq!(lock.version, "v-a");
        // Asking again answers the same lock.
        assert_eq!(granted(acquire(&store, &open(), &a).await.unwrap()), lock);
        assert_eq!(blockers(acquire(&store, &open(), &b).await.unwrap()), ["a"]);
        // Days 2..3 do not overlap days 0..2 (intervals are half-open).
        granted(acquire(&store, &open(), &c).await.unwrap());
        assert_eq!(release(&store, &open(), "events", "a").await.unwrap(), 1);
        assert_eq!(blockers(acquire(&store, &open(), &b).await.unwrap()), ["c"]);
        release(&store, &open(), "events", "c").await.unwrap();
        assert_eq!(
            granted(acquire(&store, &open(), &b).await.unwrap()).version,
            "v-b"
        );
    }

    #[tokio::test]
    async fn appends_share_an_interval_and_its_version_and_group_mates_share_theirs() {
        let store = EmbeddedStore::in_memory();
        let first = request("a1", days(0, 1), LockKind::Append, BATCH_PRIORITY);
        let second = request("a2", days(0, 1), LockKind::Append, BATCH_PRIORITY);
        assert_eq!(
            granted(acquire(&store, &open(), &first).await.unwrap()).version,
            "v-a1"
        );
        assert_eq!(
            granted(acquire(&store, &open(), &second).await.unwrap()).version,
            "v-a1"
        );
        // An append over a wider interval, and a replace, wait for both.
        let wider = request("a3", days(0, 2), LockKind::Append, BATCH_PRIORITY);
        assert_eq!(
            blockers(acquire(&store, &open(), &wider).await.unwrap()),
            ["a1", "a2"]
        );
        let replace = request("r", days(0, 1), LockKind::Exclusive, BATCH_PRIORITY);
        assert_eq!(
            blockers(acquire(&store, &open(), &replace).await.unwrap()),
            ["a1", "a2"]
        );

        // A sub-task of a group takes its group's version, and is in nobody's way.
        let parent = request("p", days(5, 6), LockKind::Exclusive, BATCH_PRIORITY);
        granted(acquire(&store, &open(), &parent).await.unwrap());
        let mut sub = request("p-sub-1", days(5, 6), LockKind::Exclusive, BATCH_PRIORITY);
        sub.group_id = "p".into();
        assert_eq!(
            granted(acquire(&store, &open(), &sub).await.unwrap()).version,
            "v-p"
        );
    }

    #[tokio::test]
    async fn a_task_holds_at_most_what_one_transaction_can_publish_under() {
        let store = EmbeddedStore::in_memory();
        for day in 0..MAX_LOCKS_PER_TASK as i64 {
            let day = request(
                "big",
                days(day, day + 1),
                LockKind::Exclusive,
                BATCH_PRIORITY,
            );
            granted(acquire(&store, &open(), &day).await.unwrap());
        }
        let one_more = request("big", days(100, 101), LockKind::Exclusive, BATCH_PRIORITY);
        let err = acquire(&store, &open(), &one_more).await.unwrap_err();
        assert!(
            err.to_string().contains("the most one task may hold"),
            "{err}"
        );
        // Another datasource whose name starts like this one's shares nothing.
        let mut other = request("o", days(0, 1), LockKind::Exclusive, BATCH_PRIORITY);
        other.datasource = "events/x".into();
        granted(acquire(&store, &open(), &other).await.unwrap());
        assert_eq!(
            list(&store, Some("events")).await.unwrap().len(),
            MAX_LOCKS_PER_TASK
        );
        let held = begin_publishing(&store, &open(), "events", "big")
            .await
            .unwrap();
        assert_eq!(held.locks().count(), MAX_LOCKS_PER_TASK);
        assert_eq!(
            release(&store, &open(), "events", "big").await.unwrap(),
            MAX_LOCKS_PER_TASK
        );
    }

    #[tokio::test]
    async fn a_writer_whose_guard_fails_changes_no_lock() {
        let store = EmbeddedStore::in_memory();
        let a = request("a", days(0, 1), LockKind::Exclusive, BATCH_PRIORITY);
        granted(acquire(&store, &open(), &a).await.unwrap());
        store.put("/leader", b"new".to_vec()).await.unwrap();
        let deposed = Txn::default().when_revision("/leader", 1);
        let b = request("b", days(5, 6), LockKind::Exclusive, BATCH_PRIORITY);
        for err in [
            acquire(&store, &deposed, &b).await.unwrap_err(),
            begin_publishing(&store, &deposed, "events", "a")
                .await
                .unwrap_err(),
            release(&store, &deposed, "events", "a").await.unwrap_err(),
        ] {
            assert!(err.to_string().contains("guard"), "{err}");
        }
        let left = list(&store, Some("events")).await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(!left[0].lock.publishing);
    }

    #[tokio::test]
    async fn a_higher_priority_revokes_and_the_revoked_task_cannot_publish() {
        let store = EmbeddedStore::in_memory();
        let batch = request("batch", days(0, 1), LockKind::Exclusive, BATCH_PRIORITY);
        let realtime = request("rt", days(0, 1), LockKind::Append, REALTIME_PRIORITY);
        let compaction = request(
            "compact",
            days(0, 1),
            LockKind::Exclusive,
            COMPACTION_PRIORITY,
        );
        granted(acquire(&store, &open(), &batch).await.unwrap());
        assert_eq!(
            blockers(acquire(&store, &open(), &compaction).await.unwrap()),
            ["batch"]
        );
        granted(acquire(&store, &open(), &realtime).await.unwrap());
        let locks = list(&store, Some("events")).await.unwrap();
        let of = |task: &str| locks.iter().find(|s| s.lock.task_id == task).unwrap();
        assert!(of("batch").lock.revoked);
        assert!(!of("rt").lock.revoked);
        let err = begin_publishing(&store, &open(), "events", "batch")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        let err = acquire(&store, &open(), &batch).await.unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        // The revoked lock blocks nobody; the realtime one blocks the compaction.
        assert_eq!(
            blockers(acquire(&store, &open(), &compaction).await.unwrap()),
            ["rt"]
        );
    }

    #[tokio::test]
    async fn a_publishing_lock_is_not_revoked_and_a_released_one_fails_the_publication() {
        let store = EmbeddedStore::in_memory();
        let batch = request("batch", days(0, 1), LockKind::Exclusive, BATCH_PRIORITY);
        let realtime = request("rt", days(0, 1), LockKind::Append, REALTIME_PRIORITY);
        granted(acquire(&store, &open(), &batch).await.unwrap());
        let held = begin_publishing(&store, &open(), "events", "batch")
            .await
            .unwrap();
        assert!(held.locks().all(|l| l.publishing && l.task_id == "batch"));
        assert_eq!(
            blockers(acquire(&store, &open(), &realtime).await.unwrap()),
            ["batch"]
        );

        // The publication applies while the locks are held ...
        let publish = |key: &str| held.guard(Txn::default().create(key.to_string(), b"1".to_vec()));
        assert!(store.txn(publish("/published/1")).await.unwrap());
        // ... and not once they are gone (the task was shut down meanwhile).
        release(&store, &open(), "events", "batch").await.unwrap();
        assert!(!store.txn(publish("/published/2")).await.unwrap());
        assert_eq!(store.get("/published/2").await.unwrap(), None);
        granted(acquire(&store, &open(), &realtime).await.unwrap());
    }
}
