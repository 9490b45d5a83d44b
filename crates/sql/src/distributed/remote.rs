//! The broker's side of fragments: [`FragmentClient`], which runs a fragment on one
//! historical over Flight with a deadline, or on a [`FragmentService`] in the same
//! process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use arrow_flight::FlightClient;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::{DataFusionError, Result as DfResult};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use grove_cluster::nodes::Role;
use grove_cluster::view::ClusterView;
use tonic::transport::{Channel, Endpoint};

use super::cache::ResultCache;
use super::fragment::FragmentService;
use super::peers::{PeerClient, PeerStream};
use super::ticket::{MAX_MESSAGE, MISSING_SEGMENTS, Ticket};
use crate::auth::ClusterSecret;

/// Why a fragment did not run on a historical.
#[derive(Debug)]
pub enum FragmentError {
    /// It does not serve these segments: nothing was read.
    Missing(Vec<String>),
    /// It could not be reached, or failed while answering: retry elsewhere.
    Unavailable(String),
    /// The fragment itself is wrong: retrying elsewhere will not help.
    Rejected(String),
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FragmentError::Missing(ids) => write!(f, "segments not served: {}", ids.join(", ")),
            FragmentError::Unavailable(why) => write!(f, "historical unavailable: {why}"),
            FragmentError::Rejected(why) => write!(f, "fragment rejected: {why}"),
        }
    }
}

impl std::error::Error for FragmentError {}

/// Idle Flight connections kept per historical for the next fragment.
const IDLE_CONNECTIONS: usize = 16;

/// Flight connections to historicals, and how much work each historical has from
/// this broker right now, for choosing replicas.
///
/// A fragment's answer has a connection of its own while it streams, taken from the
/// idle ones or opened, and given back when the answer ends: an answer the query is
/// not reading (the probe side of a join while its build side is read) holds back
/// nothing but itself. Sharing one HTTP/2 connection, its unread frames would hold the
/// connection's flow-control window and stall every other answer on it.
pub struct FragmentClient {
    idle: Arc<Mutex<HashMap<String, Vec<Channel>>>>,
    /// Historicals in this process, by the Flight address they also serve: their
    /// fragments run without Flight.
    in_process: RwLock<HashMap<String, FragmentService>>,
    /// Per Flight address: segments in fragments sent and not yet answered, over all
    /// queries.
    outstanding: Arc<Mutex<HashMap<String, usize>>>,
    /// The longest a historical may take to send a fragment's next batch (the first
    /// one with the connection included) while the broker waits for it.
    deadline: Duration,
    cache: Option<ResultCache>,
    /// The cluster's identity, which every fragment sent carries.
    secret: ClusterSecret,
}

impl FragmentClient {
    pub fn new(deadline: Duration, secret: ClusterSecret) -> Self {
        FragmentClient {
            idle: Arc::default(),
            in_process: RwLock::new(HashMap::new()),
            outstanding: Arc::default(),
            deadline,
            cache: None,
            secret,
        }
    }

    /// Keeps per-segment results of up to `bytes` in all.
    pub fn with_cache(mut self, bytes: usize) -> Self {
        self.cache = Some(ResultCache::new(bytes));
        self
    }

    /// Runs the fragments for `address` on `service`, a historical in this process:
    /// its batches are taken as they are, not encoded for Flight and decoded again.
    pub fn in_process(&self, address: &str, service: FragmentService) {
        if let Ok(mut m) = self.in_process.write() {
            m.insert(address.to_string(), service);
        }
    }

    /// Whether the historical at `address` is one in this process.
    pub fn runs_here(&self, address: &str) -> bool {
        self.in_process
            .read()
            .is_ok_and(|m| m.contains_key(address))
    }

    pub fn cache(&self) -> Option<&ResultCache> {
        self.cache.as_ref()
    }

    /// Per Flight address, the segments of fragments in flight there.
    pub fn outstanding(&self) -> HashMap<String, usize> {
        self.outstanding
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Flight connections open to `address`, idle ones only.
    pub fn idle_connections(&self, address: &str) -> usize {
        self.idle
            .lock()
            .map(|m| m.get(address).map_or(0, Vec::len))
            .unwrap_or_default()
    }

    /// Counts `segments` as outstanding at `address` until the guard is dropped.
    fn working(&self, address: &str, segments: usize) -> Working {
        if let Ok(mut m) = self.outstanding.lock() {
            *m.entry(address.to_string()).or_default() += segments;
        }
        Working {
            outstanding: self.outstanding.clone(),
            address: address.to_string(),
            segments,
        }
    }

    /// A connection to `address` for one answer: an idle one, or a new one.
    fn connection(&self, address: &str) -> std::result::Result<Lease, FragmentError> {
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(address).and_then(Vec::pop));
        let channel = match idle {
            Some(channel) => channel,
            None => Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| FragmentError::Rejected(format!("address {address}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true)
                // Connects on first use; a dead address fails that call, not this one.
                .connect_lazy(),
        };
        Ok(Lease {
            idle: self.idle.clone(),
            address: address.to_string(),
            channel,
        })
    }

    /// Starts `ticket` on the historical at `address`; its batches come as the
    /// historical sends them, each within the deadline.
    pub async fn open(
        &self,
        address: &str,
        ticket: &Ticket,
    ) -> std::result::Result<FragmentStream, FragmentError> {
        let working = self.working(address, ticket.segments.len());
        let local = self
            .in_process
            .read()
            .ok()
            .and_then(|m| m.get(address).cloned());
        if let Some(service) = local {
            let mut stream = service.execute(ticket).map_err(classify_status)?;
            // On a task of its own, as a historical serves Flight: fragments run side
            // by side, and once the broker stops listening the fragment stops.
            let (sender, mut receiver) = tokio::sync::mpsc::channel(2);
            let task = SpawnedTask::spawn(async move {
                while let Some(batch) = stream.next().await {
                    if sender.send(batch).await.is_err() {
                        break;
                    }
                    // Between batches others run, as between a historical's Flight
                    // messages: a batch may take long to make.
                    tokio::task::yield_now().await;
                }
            });
            let failed = address.to_string();
            let batches = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
                .map(move |b| b.map_err(|e| FragmentError::Unavailable(format!("{failed}: {e}"))))
                .boxed();
            return Ok(FragmentStream {
                address: address.to_string(),
                deadline: self.deadline,
                batches,
                _working: working,
                _task: Some(task),
                connection: None,
            });
        }
        let lease = self.connection(address)?;
        let client =
            arrow_flight::flight_service_client::FlightServiceClient::new(lease.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
        let mut client = FlightClient::new_from_inner(client);
        client
            .add_header("authorization", self.secret.authorization())
            .map_err(classify)?;
        let call = client.do_get(arrow_flight::Ticket::new(ticket.encode()));
        let batches = match tokio::time::timeout(self.deadline, call).await {
            Ok(answer) => answer.map_err(classify)?,
            Err(_) => return Err(silent(address, self.deadline)),
        };
        Ok(FragmentStream {
            address: address.to_string(),
            deadline: self.deadline,
            batches: batches.map_err(classify).boxed(),
            _working: working,
            _task: None,
            connection: Some(lease),
        })
    }

    /// Runs `ticket` on the historical at `address` and returns all of its batches,
    /// or nothing: a fragment that fails halfway gives no rows.
    pub async fn run(
        &self,
        address: &str,
        ticket: &Ticket,
    ) -> std::result::Result<Vec<RecordBatch>, FragmentError> {
        let mut stream = self.open(address, ticket).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        Ok(batches)
    }
}

/// The historicals a shuffle stage on this one may read from: those in this process,
/// and the cluster's historicals and streaming tasks as `view` lists them.
#[derive(Debug)]
pub struct Peers {
    /// Not kept alive from here: the client may hold the historicals in this process,
    /// which hold their peers.
    client: Weak<FragmentClient>,
    view: Option<Arc<ClusterView>>,
}

impl Peers {
    pub fn new(client: &Arc<FragmentClient>, view: Option<Arc<ClusterView>>) -> Arc<Peers> {
        Arc::new(Peers {
            client: Arc::downgrade(client),
            view,
        })
    }
}

impl PeerClient for Peers {
    fn knows(&self, address: &str) -> bool {
        self.client
            .upgrade()
            .is_some_and(|client| client.runs_here(address))
            || self.view.as_ref().is_some_and(|view| {
                view.read(|state| {
                    state.nodes.values().any(|n| {
                        matches!(n.role, Role::Historical | Role::Peon)
                            && n.flight_address.as_deref() == Some(address)
                    })
                })
            })
    }

    fn open(&self, address: String, ticket: Ticket) -> BoxFuture<'static, DfResult<PeerStream>> {
        let client = self.client.upgrade();
        async move {
            let client = client
                .ok_or_else(|| DataFusionError::Execution("this node is shutting down".into()))?;
            let stream = client
                .open(&address, &ticket)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let batches = futures::stream::unfold(stream, |mut stream| async move {
                let next = stream.next().await?;
                Some((
                    next.map_err(|e| DataFusionError::External(Box::new(e))),
                    stream,
                ))
            });
            Ok(batches.boxed())
        }
        .boxed()
    }
}

fn silent(address: &str, deadline: Duration) -> FragmentError {
    FragmentError::Unavailable(format!("{address} sent nothing within {deadline:?}"))
}

impl fmt::Debug for FragmentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FragmentClient")
            .field("deadline", &self.deadline)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// A fragment's answer, batch by batch as the historical sends it. Dropping it
/// stops the fragment.
pub struct FragmentStream {
    address: String,
    deadline: Duration,
    batches: futures::stream::BoxStream<'static, std::result::Result<RecordBatch, FragmentError>>,
    _working: Working,
    /// The in-process fragment's task, stopped when this is dropped.
    _task: Option<SpawnedTask<()>>,
    /// The answer's Flight connection, idle again once the answer has ended well.
    connection: Option<Lease>,
}

impl FragmentStream {
    /// The next batch; a historical that sends nothing within the deadline while it
    /// is waited for is unavailable.
    pub async fn next(&mut self) -> Option<std::result::Result<RecordBatch, FragmentError>> {
        let next = match tokio::time::timeout(self.deadline, self.batches.next()).await {
            Ok(next) => next,
            Err(_) => Some(Err(silent(&self.address, self.deadline))),
        };
        match &next {
            None => {
                if let Some(lease) = self.connection.take() {
                    lease.release();
                }
            }
            // A connection that failed is not used again.
            Some(Err(_)) => self.connection = None,
            Some(Ok(_)) => {}
        }
        next
    }
}

/// A Flight connection lent to one answer.
struct Lease {
    idle: Arc<Mutex<HashMap<String, Vec<Channel>>>>,
    address: String,
    channel: Channel,
}

impl Lease {
    /// Gives the connection back for the next answer (dropping it closes it).
    fn release(self) {
        if let Ok(mut m) = self.idle.lock() {
            let idle = m.entry(self.address).or_default();
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(self.channel);
            }
        }
    }
}

/// Outstanding work at one address, taken back when the fragment ends in any way.
struct Working {
    outstanding: Arc<Mutex<HashMap<String, usize>>>,
    address: String,
    segments: usize,
}

impl Drop for Working {
    fn drop(&mut self) {
        if let Ok(mut m) = self.outstanding.lock()
            && let Some(count) = m.get_mut(&self.address)
        {
            *count = count.saturating_sub(self.segments);
            if *count == 0 {
                m.remove(&self.address);
            }
        }
    }
}

fn classify(error: FlightError) -> FragmentError {
    match error {
        FlightError::Tonic(status) => classify_status(*status),
        other => FragmentError::Unavailable(other.to_string()),
    }
}

fn classify_status(status: tonic::Status) -> FragmentError {
    match status.code() {
        tonic::Code::NotFound => {
            let ids = status
                .metadata()
                .get(MISSING_SEGMENTS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok());
            match ids {
                Some(ids) => FragmentError::Missing(ids),
                None => FragmentError::Unavailable(status.message().to_string()),
            }
        }
        tonic::Code::InvalidArgument | tonic::Code::Unimplemented => {
            FragmentError::Rejected(status.message().to_string())
        }
        _ => FragmentError::Unavailable(status.message().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A historical that takes the connection and never answers: the fragment's
    /// segments count as outstanding there until its deadline, then not at all.
    #[tokio::test]
    async fn outstanding_work_is_counted_while_a_fragment_runs() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let client = Arc::new(FragmentClient::new(
            Duration::from_millis(1500),
            crate::auth::ClusterSecret::generate(),
        ));
        let ticket = Ticket {
            query_id: "q".into(),
            segments: vec!["a".into(), "b".into(), "c".into()],
            batch_size: None,
            stage: false,
            plan: Vec::new(),
        };
        let running = tokio::spawn({
            let (client, address) = (client.clone(), address.clone());
            async move { client.run(&address, &ticket).await }
        });
        let began = std::time::Instant::now();
        while client.outstanding().get(&address) != Some(&3) {
            assert!(began.elapsed() < Duration::from_secs(1), "never counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let result = running.await.unwrap();
        assert!(
            matches!(result, Err(FragmentError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            client.outstanding().is_empty(),
            "{:?}",
            client.outstanding()
        );
    }
}
