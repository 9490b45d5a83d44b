//! A batch ingestion task: build segments from a spec into a staging directory, move
//! them to deep storage, then publish all their descriptors in one metadata
//! transaction. Until that transaction commits nothing is visible; if anything fails
//! before it, the files written so far are removed and nothing is published.

use std::collections::BTreeMap;
use std::path::Path;

use grove_segment::format::Segment;
use grove_segment::ingest::{Allocator, BuiltSegment, Progress, build_segments};
use grove_segment::spec::IngestionSpec;
use grove_segment::timeline::Timeline;
use grove_segment::{Interval, SegmentId};

use crate::deep_storage::DeepStorage;
use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn};
use crate::segments::{self, SegmentDescriptor};
use crate::stream_offsets::{self, OffsetCommit, StreamOffsets};

pub struct IngestOutcome {
    pub progress: Progress,
    pub published: Vec<SegmentDescriptor>,
}

/// Runs `spec` to completion. `version` is the task's version (an ISO timestamp of its
/// start); `staging_root` is local scratch space.
pub async fn run_batch(
    spec: &IngestionSpec,
    store: &dyn MetaStore,
    deep: &DeepStorage,
    staging_root: &Path,
    version: &str,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<IngestOutcome> {
    let existing: Vec<SegmentDescriptor> = segments::load(store, Some(&spec.datasource))
        .await?
        .into_iter()
        .filter(|d| d.used)
        .collect();
    let mut allocator = TaskAllocator::new(spec.append_to_existing, version, &existing)?;
    let task_id = task_id(version);
    let stored = build_and_store(
        spec,
        deep,
        staging_root,
        &task_id,
        &mut allocator,
        on_progress,
    )
    .await?;
    let mut descriptors = stored.descriptors;
    if let Err(e) = publish(store, &Txn::default(), &mut descriptors, &task_id, None).await {
        if !matches!(e, Error::Indeterminate(_)) {
            discard(deep, &descriptors).await;
        }
        return Err(e);
    }
    Ok(IngestOutcome {
        progress: stored.progress,
        published: descriptors,
    })
}

/// Segments built and moved to deep storage, not yet published.
pub struct Stored {
    pub progress: Progress,
    pub descriptors: Vec<SegmentDescriptor>,
}

/// Chooses the version and first partition of each time chunk a task writes, and
/// remembers the chunks it appended to.
pub trait TaskChunks: Allocator {
    /// The core partition count of a chunk the task appended to (`None`: it wrote the
    /// chunk's version itself, and its own partitions are the core ones).
    fn appended_core(&self, chunk: &(Interval, String)) -> Option<u32>;
}

/// Builds `spec`'s segments in a staging directory under `staging_root` and moves
/// them to deep storage under `{datasource}/{task_id}/`. On failure every file stored
/// so far is deleted again.
pub async fn build_and_store(
    spec: &IngestionSpec,
    deep: &DeepStorage,
    staging_root: &Path,
    task_id: &str,
    allocator: &mut (dyn TaskChunks + Send),
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Stored> {
    std::fs::create_dir_all(staging_root)
        .map_err(|e| Error::io(format!("creating {}", staging_root.display()), e))?;
    let staging = tempdir_in(staging_root)?;
    let inputs = crate::inputs::fetch(spec, staging.path()).await?;
    // Blocks this thread while reading input: a task runs alone in its process.
    let report = build_segments(
        spec,
        &inputs,
        staging.path(),
        &mut Upcast(allocator),
        on_progress,
    )?;
    let descriptors = describe(&report.segments, allocator, task_id)?;
    for (i, (built, descriptor)) in report.segments.iter().zip(&descriptors).enumerate() {
        if let Err(e) = deep.store(&built.path, &descriptor.path).await {
            discard(deep, &descriptors[..i]).await;
            return Err(e);
        }
    }
    Ok(Stored {
        progress: report.progress,
        descriptors,
    })
}

/// Deletes the files of segments that were stored but will never be published.
pub async fn discard(deep: &DeepStorage, descriptors: &[SegmentDescriptor]) {
    for d in descriptors {
        // Best effort: an orphaned file is harmless, a lost error is not.
        let _ = deep.delete(&d.path).await;
    }
}

/// `build_segments` takes a plain [`Allocator`].
struct Upcast<'a>(&'a mut (dyn TaskChunks + Send));

impl Allocator for Upcast<'_> {
    fn allocate(&mut self, chunk: Interval) -> grove_segment::Result<(String, u32)> {
        self.0.allocate(chunk)
    }
}

/// A name for this run, unique enough that two runs never write the same deep storage
/// path (a failed run deletes what it stored, and must not delete another's files).
fn task_id(version: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos:08x}",
        version.replace(':', "-"),
        std::process::id()
    )
}

fn tempdir_in(root: &Path) -> Result<TempDir> {
    for attempt in 0..100u32 {
        let path = root.join(format!("task-{}-{attempt}", std::process::id()));
        if std::fs::create_dir(&path).is_ok() {
            return Ok(TempDir(path));
        }
    }
    Err(Error::Invalid(format!(
        "cannot create a staging directory in {}",
        root.display()
    )))
}

/// A staging directory removed (with whatever is left in it) when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The most segments published in one transaction: etcd refuses transactions of more
/// than 128 operations (its default `--max-txn-ops`).
pub const SEGMENTS_PER_TXN: usize = 100;

/// Publishes all descriptors at once, if `guard`'s compares hold (an overlord's
/// fence and the task's locks); fails if any of them exists already.
///
/// Up to [`SEGMENTS_PER_TXN`] segments go in one transaction. More are written in
/// several, each naming the task, and become visible together when one last
/// transaction creates the task's commit key; a task that dies before that leaves
/// only invisible descriptors.
///
/// With `offsets`, the transaction that makes the segments visible also moves the
/// datasource's stream offsets, and applies only if they stand where the commit
/// starts ([`stream_offsets`](crate::stream_offsets)).
pub async fn publish(
    store: &dyn MetaStore,
    guard: &Txn,
    descriptors: &mut [SegmentDescriptor],
    task_id: &str,
    offsets: Option<&OffsetCommit>,
) -> Result<()> {
    // The offsets as they stand, checked before anything is written.
    let mut stored = match offsets {
        Some(commit) => {
            let (stored, revision) = stream_offsets::read(store, &commit.datasource).await?;
            commit.apply(stored.as_ref(), revision, Txn::default())?;
            Some((stored, revision))
        }
        None => None,
    };
    if descriptors.is_empty() {
        // Nothing was read that made a row: the offsets move on alone.
        if offsets.is_none() {
            return Ok(());
        }
        let txn = guard.compares_only();
        return match with_offsets(store, txn, None, offsets, &mut stored).await? {
            true => Ok(()),
            false => Err(refusal(store, guard, offsets, stored.as_ref().map(|s| s.1)).await),
        };
    }
    let single = descriptors.len() <= SEGMENTS_PER_TXN;
    for d in descriptors.iter_mut() {
        d.commit = (!single).then(|| task_id.to_string());
    }
    let mut written = 0;
    let mut outcome = Ok(());
    for chunk in descriptors.chunks(SEGMENTS_PER_TXN) {
        let mut txn = guard.compares_only();
        for d in chunk {
            let value = serde_json::to_vec(d).map_err(|e| Error::Store(e.to_string()))?;
            txn = txn.create(d.key(), value);
        }
        let probe = chunk[0].key();
        let value = serde_json::to_vec(&chunk[0]).map_err(|e| Error::Store(e.to_string()))?;
        let done = match single {
            true => with_offsets(store, txn, Some((&probe, &value)), offsets, &mut stored).await,
            false => applied(store, txn, &probe, &value).await,
        };
        outcome = match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(refusal(store, guard, offsets, stored.as_ref().map(|s| s.1)).await),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            break;
        }
        written += chunk.len();
    }
    if outcome.is_ok() && !single {
        let marker = serde_json::json!({ "status": "published", "segments": descriptors.len() });
        let marker = marker.to_string().into_bytes();
        let key = segments::commit_key(task_id);
        let txn = guard.compares_only().create(key.clone(), marker.clone());
        outcome = match with_offsets(store, txn, Some((&key, &marker)), offsets, &mut stored).await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(refusal(store, guard, offsets, stored.as_ref().map(|s| s.1)).await),
            Err(e) => Err(e),
        };
    }
    if outcome.is_err() && !matches!(outcome, Err(Error::Indeterminate(_))) {
        // Invisible without the commit key; removed so they do not linger.
        for d in &descriptors[..written] {
            let _ = store.delete(&d.key()).await;
        }
    }
    outcome
}

/// How often a publication is tried again because other partitions' offsets moved
/// while it was written.
const OFFSET_RETRIES: usize = 16;

/// Applies `txn` (which creates `probe`'s key, if given) together with the `offsets`
/// commit, compared against the offsets `stored` at their revision. Task groups that
/// read different partitions publish independently, but their commits compare the
/// same key: when only their publication moved the offsets meanwhile, and this
/// commit's own partitions still stand at its start, it is tried again against the
/// offsets as they stand now. False when it does not apply.
async fn with_offsets(
    store: &dyn MetaStore,
    txn: Txn,
    probe: Option<(&str, &[u8])>,
    offsets: Option<&OffsetCommit>,
    stored: &mut Option<(Option<StreamOffsets>, u64)>,
) -> Result<bool> {
    for _ in 0..OFFSET_RETRIES {
        let full = match (offsets, stored.as_ref()) {
            (Some(commit), Some((now, revision))) => {
                commit.apply(now.as_ref(), *revision, txn.clone())?
            }
            _ => txn.clone(),
        };
        let done = match probe {
            Some((key, value)) => applied(store, full, key, value).await?,
            None => store.txn(full).await?,
        };
        let Some(commit) = offsets.filter(|_| !done) else {
            return Ok(done);
        };
        let (now, revision) = stream_offsets::read(store, &commit.datasource).await?;
        let moved = stored.as_ref().is_none_or(|(_, r)| *r != revision);
        if !moved
            || commit
                .apply(now.as_ref(), revision, Txn::default())
                .is_err()
        {
            return Ok(false);
        }
        *stored = Some((now, revision));
    }
    Ok(false)
}

/// Why a publishing transaction did not apply: the guard failed (the task lost a lock,
/// or the overlord its leadership), or a segment id was taken.
async fn refusal(
    store: &dyn MetaStore,
    guard: &Txn,
    offsets: Option<&OffsetCommit>,
    revision: Option<u64>,
) -> Error {
    match store.txn(guard.compares_only()).await {
        Ok(false) => Error::Busy(
            "the task's locks were revoked or released (or the overlord lost its \
             leadership) before it published; nothing was published"
                .into(),
        ),
        Ok(true) => {
            if let Some(commit) = offsets {
                match stream_offsets::read(store, &commit.datasource).await {
                    Ok((stored, now)) if Some(now) != revision => {
                        // Says how they moved, or that they moved.
                        return commit
                            .apply(stored.as_ref(), now, Txn::default())
                            .err()
                            .unwrap_or_else(|| {
                                Error::Busy(
                                    "the stream's committed offsets moved while this \
                                     publication was written; nothing was published"
                                        .into(),
                                )
                            });
                    }
                    Ok(_) => {}
                    Err(e) => return e,
                }
            }
            Error::Busy(
                "another task published segments with the same ids first; nothing was published"
                    .into(),
            )
        }
        Err(e) => e,
    }
}

/// Applies `txn`, which creates `key` with `value`. A store error leaves the outcome
/// unknown (etcd may have committed before the answer was lost), so the key is read
/// back: the transaction happened if it holds exactly our value. Only when that read
/// fails too is the error returned.
async fn applied(store: &dyn MetaStore, txn: Txn, key: &str, value: &[u8]) -> Result<bool> {
    match store.txn(txn).await {
        Ok(done) => Ok(done),
        Err(e) => match store.get(key).await {
            Ok(Some(kv)) if kv.value == value => Ok(true),
            Ok(_) => Err(e),
            Err(_) => Err(Error::Indeterminate(format!(
                "{e}; whether the publication happened is unknown: check {key}"
            ))),
        },
    }
}

pub(crate) fn describe(
    built: &[BuiltSegment],
    allocator: &dyn TaskChunks,
    task_id: &str,
) -> Result<Vec<SegmentDescriptor>> {
    let mut made: BTreeMap<(Interval, String), u32> = BTreeMap::new();
    for b in built {
        *made
            .entry((b.id.interval, b.id.version.clone()))
            .or_default() += 1;
    }
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    built
        .iter()
        .map(|b| {
            let segment = Segment::open(&b.path)?;
            let chunk = (b.id.interval, b.id.version.clone());
            let core_partitions = allocator
                .appended_core(&chunk)
                .unwrap_or_else(|| made[&chunk]);
            Ok(SegmentDescriptor {
                id: b.id.clone(),
                core_partitions,
                size: b.written.size,
                num_rows: b.written.num_rows,
                crc32: b.written.crc32,
                path: format!("{}/{task_id}/{}.grove", b.id.datasource, b.id.file_stem()),
                columns: SegmentDescriptor::columns_of(&segment),
                created: created.clone(),
                used: true,
                commit: None,
            })
        })
        .collect()
}

/// Chooses version and partition numbers: a replace writes a new version starting at
/// partition 0; an append adds partitions to the chunk already there.
struct TaskAllocator {
    append: bool,
    version: String,
    existing: Timeline<u32>,
    /// Chunks appended to, with their core partition count.
    appended: BTreeMap<(Interval, String), u32>,
    /// The version and next partition of each chunk written so far.
    next: BTreeMap<Interval, (String, u32)>,
}

impl TaskAllocator {
    fn new(append: bool, version: &str, existing: &[SegmentDescriptor]) -> Result<Self> {
        let mut timeline = Timeline::new();
        for d in existing {
            timeline.add(d.id.clone(), d.core_partitions, d.core_partitions)?;
        }
        Ok(TaskAllocator {
            append,
            version: version.to_string(),
            existing: timeline,
            appended: BTreeMap::new(),
            next: BTreeMap::new(),
        })
    }
}

impl TaskChunks for TaskAllocator {
    fn appended_core(&self, chunk: &(Interval, String)) -> Option<u32> {
        self.appended.get(chunk).copied()
    }
}

impl Allocator for TaskAllocator {
    /// The chunk's first segment takes its place as [`TaskAllocator::first`] says; the
    /// others follow it.
    fn allocate(&mut self, chunk: Interval) -> grove_segment::Result<(String, u32)> {
        let (version, partition) = match self.next.get(&chunk) {
            Some(next) => next.clone(),
            None => self.first(chunk)?,
        };
        self.next.insert(chunk, (version.clone(), partition + 1));
        Ok((version, partition))
    }
}

impl TaskAllocator {
    fn first(&mut self, chunk: Interval) -> grove_segment::Result<(String, u32)> {
        let visible = self.existing.lookup(chunk);
        if !self.append {
            if let Some(newer) = visible.iter().find(|v| v.version >= self.version) {
                return Err(grove_segment::Error::invalid(format!(
                    "version {} of {} is not older than this task's version {}",
                    newer.version, newer.chunk_interval, self.version
                )));
            }
            return Ok((self.version.clone(), 0));
        }
        match visible.as_slice() {
            [] => Ok((self.version.clone(), 0)),
            [only] if only.chunk_interval == chunk => {
                let next = only
                    .segments
                    .iter()
                    .map(|(id, _): &(SegmentId, u32)| id.partition + 1)
                    .max()
                    .unwrap_or(0);
                let core = only.segments.first().map_or(0, |(_, core)| *core);
                self.appended.insert((chunk, only.version.clone()), core);
                Ok((only.version.clone(), next))
            }
            _ => Err(grove_segment::Error::invalid(format!(
                "cannot append to {chunk}: existing segments there use other intervals; \
                 use the segmentGranularity they were ingested with"
            ))),
        }
    }
}
