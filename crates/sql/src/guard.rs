//! What stops a running statement: a cancel request from its client, or its timeout.
//! The front ends run each statement's planning, execution and every batch of its
//! rows under a [`Guard`]; when the guard trips, the work is dropped, and with it the
//! DataFusion stream and the fragment streams on the historicals.

use std::future::Future;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, stream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The limits of one statement (or of the statements of one request).
#[derive(Clone, Debug)]
pub struct Guard {
    token: CancellationToken,
    deadline: Option<Instant>,
}

/// Why guarded work did not finish.
#[derive(Debug)]
pub enum Halt {
    Cancelled,
    TimedOut,
    Failed(DataFusionError),
}

impl Guard {
    /// Trips when `token` is cancelled or after `timeout`.
    pub fn new(token: CancellationToken, timeout: Option<Duration>) -> Guard {
        Guard {
            token,
            // A deadline past what the clock can hold is no deadline.
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
        }
    }

    /// `work`, unless the guard trips first; then `work` is dropped.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = datafusion::error::Result<T>>,
    ) -> Result<T, Halt> {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.token.cancelled() => Err(Halt::Cancelled),
            () = deadline => Err(Halt::TimedOut),
            result = work => result.map_err(Halt::Failed),
        }
    }

    /// A query's batches as they arrive, until they end, fail, or the guard trips;
    /// an error is the stream's last item, and after the last it stays ended.
    pub fn batches(
        self,
        batches: SendableRecordBatchStream,
    ) -> impl Stream<Item = Result<RecordBatch, Halt>> + Send {
        stream::unfold(Some(batches), move |batches| {
            let guard = self.clone();
            async move {
                let mut batches = batches?;
                let next = guard.run(async { batches.next().await.transpose() }).await;
                match next {
                    Ok(Some(batch)) => Some((Ok(batch), Some(batches))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
        .fuse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_guard_stops_work_on_cancel_or_deadline_and_passes_errors_through() {
        let token = CancellationToken::new();
        let guard = Guard::new(token.clone(), None);
        assert_eq!(guard.run(async { Ok(7) }).await.ok(), Some(7));
        let failed = guard
            .run(async { Err::<(), _>(DataFusionError::Plan("no such table".into())) })
            .await;
        assert!(
            matches!(failed, Err(Halt::Failed(DataFusionError::Plan(m))) if m == "no such table")
        );
        token.cancel();
        let cancelled = guard.run(std::future::pending::<datafusion::error::Result<()>>());
        assert!(matches!(cancelled.await, Err(Halt::Cancelled)));

        let guard = Guard::new(CancellationToken::new(), Some(Duration::from_millis(20)));
        let timed_out = guard.run(std::future::pending::<datafusion::error::Result<()>>());
        assert!(matches!(timed_out.await, Err(Halt::TimedOut)));
    }
}
