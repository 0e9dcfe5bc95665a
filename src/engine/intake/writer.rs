//! The one intake writer: group commit. Handlers queue their delivery on a bounded channel and
//! wait; one task takes whatever is waiting (never waiting for more), has the
//! [`IntakeService`] store it as one transaction, commits once at `synchronous = FULL`, and
//! only then answers each delivery. One fsync then covers many deliveries, so intake keeps up
//! with a storm without weakening what a 202 means: the alert is on disk.
//!
//! A full queue answers [`SubmitError::QueueFull`] after a short bounded wait (503 with
//! `Retry-After`), so memory stays bounded. On shutdown the writer stops taking deliveries
//! (new ones get [`SubmitError::ShuttingDown`]), commits every delivery already queued and
//! answers it, then ends.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{AlertOutcome, IntakeService, Submission};
use crate::store::StoreError;

/// Deliveries that may wait for the writer; past this, senders wait up to [`QUEUE_WAIT`].
pub const QUEUE_CAPACITY: usize = 1024;

/// How long a delivery waits for room in a full queue before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// What a refused sender is told to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A batch holds at most this many deliveries...
const MAX_BATCH_DELIVERIES: usize = 256;

/// ...and at most this many alerts (a delivery larger than this is a batch of its own).
const MAX_BATCH_ALERTS: usize = 2048;

/// Why a delivery was not stored. Clone, because one failed commit answers every delivery of
/// its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "intake is busy: {QUEUE_CAPACITY} deliveries are waiting to be stored; retry in {RETRY_AFTER_SECS} s"
    )]
    QueueFull,
    #[error(
        "runbookd is shutting down and takes no more deliveries; retry in {RETRY_AFTER_SECS} s"
    )]
    ShuttingDown,
    /// Storing failed; nothing of the delivery was stored.
    #[error("the delivery could not be stored: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The writer panicked while storing the batch; it rolled back and the writer goes on.
    #[error("the intake writer failed while storing the delivery; nothing of it was stored")]
    Panicked,
}

impl From<StoreError> for SubmitError {
    fn from(error: StoreError) -> Self {
        Self::Store(Arc::new(error))
    }
}

type Answer = Result<Vec<AlertOutcome>, SubmitError>;

/// A delivery waiting for the writer, and where its answer goes.
struct Job {
    submission: Submission,
    answer: oneshot::Sender<Answer>,
}

/// The senders' end: cheap to clone, one per handler.
#[derive(Clone)]
pub struct IntakeWriter {
    jobs: mpsc::Sender<Job>,
}

/// The writer's end: [`IntakeQueue::run_until`] is the writer task.
pub struct IntakeQueue {
    jobs: mpsc::Receiver<Job>,
}

/// A bounded queue of `capacity` deliveries between the handlers and the writer.
pub fn channel(capacity: usize) -> (IntakeWriter, IntakeQueue) {
    let (sender, receiver) = mpsc::channel(capacity);
    (
        IntakeWriter { jobs: sender },
        IntakeQueue { jobs: receiver },
    )
}

/// A queued delivery; [`Queued::outcome`] waits for the commit that holds it.
pub struct Queued(oneshot::Receiver<Answer>);

impl Queued {
    pub async fn outcome(self) -> Answer {
        // The writer answers every job it takes, even when a batch panics; a closed channel
        // means the task itself is gone.
        self.0.await.unwrap_or(Err(SubmitError::Panicked))
    }
}

impl IntakeWriter {
    /// Stores `submission` and returns its outcome once the commit that holds it is durable.
    pub async fn submit(&self, submission: Submission) -> Answer {
        self.enqueue(submission).await?.outcome().await
    }

    /// Queues `submission` behind those already waiting, waiting at most [`QUEUE_WAIT`] for
    /// room.
    pub async fn enqueue(&self, submission: Submission) -> Result<Queued, SubmitError> {
        let (answer, outcome) = oneshot::channel();
        let job = Job { submission, answer };
        match self.jobs.send_timeout(job, QUEUE_WAIT).await {
            Ok(()) => Ok(Queued(outcome)),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(SubmitError::QueueFull),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(SubmitError::ShuttingDown),
        }
    }
}

impl IntakeQueue {
    /// The writer: commits what is queued, batch after batch, until `shutdown`; then stops
    /// taking deliveries, commits those already queued, and returns.
    pub async fn run_until(
        mut self,
        service: Arc<IntakeService>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut stopping = false;
        // A delivery that did not fit in the previous batch opens the next one.
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => tokio::select! {
                    job = self.jobs.recv() => match job {
                        Some(job) => job,
                        // Closed and drained, or every sender is gone.
                        None => return,
                    },
                    () = &mut shutdown, if !stopping => {
                        stopping = true;
                        self.jobs.close();
                        continue;
                    }
                },
            };
            let mut alerts = first.submission.delivery.entries.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_DELIVERIES {
                let Ok(job) = self.jobs.try_recv() else {
                    break;
                };
                alerts += job.submission.delivery.entries.len();
                if alerts > MAX_BATCH_ALERTS {
                    carried = Some(job);
                    break;
                }
                batch.push(job);
            }
            commit(&service, batch).await;
        }
    }
}

/// Stores `batch` as one transaction, then answers each delivery of it.
async fn commit(service: &IntakeService, batch: Vec<Job>) {
    let (submissions, answer_to): (Vec<Submission>, Vec<_>) = batch
        .into_iter()
        .map(|job| (job.submission, job.answer))
        .unzip();
    let deliveries = submissions.len();
    let stored = AssertUnwindSafe(service.accept_batch(submissions))
        .catch_unwind()
        .await;
    let answers: Vec<Answer> = match stored {
        Ok(Ok(answers)) => {
            metrics::histogram!("runbookd_intake_batch_size").record(deliveries as f64);
            answers
                .into_iter()
                .map(|answer| answer.map_err(SubmitError::from))
                .collect()
        }
        Ok(Err(error)) => {
            tracing::error!(%error, deliveries, "an intake batch could not be committed");
            let error = SubmitError::from(error);
            vec![Err(error); deliveries]
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%message, deliveries, "the intake writer panicked; the batch rolled back");
            vec![Err(SubmitError::Panicked); deliveries]
        }
    };
    for (sender, answer) in answer_to.into_iter().zip(answers) {
        // The sender may have gone (its request timed out); the delivery is stored all the same.
        let _ = sender.send(answer);
    }
}
