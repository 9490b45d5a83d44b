//! The broker's side of fragments: [`FragmentClient`], which runs a fragment on one
//! historical over Flight with a deadline, or on a [`FragmentService`] in the same
//! process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use arrow_flight::FlightClient;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};

use super::cache::ResultCache;
use super::fragment::FragmentService;
use super::ticket::{MAX_MESSAGE, MISSING_SEGMENTS, Ticket};

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

/// Flight connections to historicals, one channel per address, reused; and how much
/// work each historical has from this broker right now, for choosing replicas.
pub struct FragmentClient {
    channels: Mutex<HashMap<String, Channel>>,
    /// Historicals in this process, by the Flight address they also serve: their
    /// fragments run without Flight.
    in_process: RwLock<HashMap<String, FragmentService>>,
    /// Per Flight address: segments in fragments sent and not yet answered, over all
    /// queries.
    outstanding: Mutex<HashMap<String, usize>>,
    /// The longest a fragment may take, connection included.
    deadline: Duration,
    cache: Option<ResultCache>,
}

impl FragmentClient {
    pub fn new(deadline: Duration) -> Self {
        FragmentClient {
            channels: Mutex::new(HashMap::new()),
            in_process: RwLock::new(HashMap::new()),
            outstanding: Mutex::new(HashMap::new()),
            deadline,
            cache: None,
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

    /// Counts `segments` as outstanding at `address` until the guard is dropped.
    fn working(&self, address: &str, segments: usize) -> Working<'_> {
        if let Ok(mut m) = self.outstanding.lock() {
            *m.entry(address.to_string()).or_default() += segments;
        }
        Working {
            client: self,
            address: address.to_string(),
            segments,
        }
    }

    fn channel(&self, address: &str) -> std::result::Result<Channel, FragmentError> {
        if let Some(c) = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(address).cloned())
        {
            return Ok(c);
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| FragmentError::Rejected(format!("address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        // Connects on first use; a dead address fails that call, not this one.
        let channel = endpoint.connect_lazy();
        if let Ok(mut m) = self.channels.lock() {
            m.insert(address.to_string(), channel.clone());
        }
        Ok(channel)
    }

    /// Runs `ticket` on the historical at `address` and returns all of its batches,
    /// or nothing: a fragment that fails halfway gives no rows, so that it can be
    /// run again elsewhere without counting anything twice.
    pub async fn run(
        &self,
        address: &str,
        ticket: &Ticket,
    ) -> std::result::Result<Vec<RecordBatch>, FragmentError> {
        let _working = self.working(address, ticket.segments.len());
        let local = self
            .in_process
            .read()
            .ok()
            .and_then(|m| m.get(address).cloned());
        if let Some(service) = local {
            let call = async {
                let mut stream = service.execute(ticket).map_err(classify_status)?;
                // On a task of its own, as a historical serves Flight: fragments run
                // side by side, this task stays free to notice a cancel, and once it
                // stops listening (or is dropped) the fragment stops.
                let (sender, mut receiver) = tokio::sync::mpsc::channel(2);
                let _running = SpawnedTask::spawn(async move {
                    while let Some(batch) = stream.next().await {
                        if sender.send(batch).await.is_err() {
                            break;
                        }
                        // Between batches others run, as between a historical's
                        // Flight messages: a batch may take long to make.
                        tokio::task::yield_now().await;
                    }
                });
                let mut batches = Vec::new();
                while let Some(batch) = receiver.recv().await {
                    batches.push(
                        batch.map_err(|e| FragmentError::Unavailable(format!("{address}: {e}")))?,
                    );
                }
                Ok(batches)
            };
            return self.within_deadline(address, call).await;
        }
        let channel = self.channel(address)?;
        let client = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut client = FlightClient::new_from_inner(client);
        let call = async {
            let stream = client
                .do_get(arrow_flight::Ticket::new(ticket.encode()))
                .await
                .map_err(classify)?;
            stream.try_collect::<Vec<_>>().await.map_err(classify)
        };
        self.within_deadline(address, call).await
    }

    async fn within_deadline<T>(
        &self,
        address: &str,
        call: impl Future<Output = std::result::Result<T, FragmentError>>,
    ) -> std::result::Result<T, FragmentError> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(FragmentError::Unavailable(format!(
                "{address} did not finish within {:?}",
                self.deadline
            ))),
        }
    }
}

impl fmt::Debug for FragmentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FragmentClient")
            .field("deadline", &self.deadline)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// Outstanding work at one address, taken back when the fragment ends in any way.
struct Working<'a> {
    client: &'a FragmentClient,
    address: String,
    segments: usize,
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.client.outstanding.lock()
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
    use std::sync::Arc;

    use super::*;

    /// A historical that takes the connection and never answers: the fragment's
    /// segments count as outstanding there until its deadline, then not at all.
    #[tokio::test]
    async fn outstanding_work_is_counted_while_a_fragment_runs() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let client = Arc::new(FragmentClient::new(Duration::from_millis(1500)));
        let ticket = Ticket {
            query_id: "q".into(),
            segments: vec!["a".into(), "b".into(), "c".into()],
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
