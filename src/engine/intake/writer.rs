//! The one intake writer: group commit. Handlers queue their delivery on a bounded channel and
//! wait; the writer's thread takes whatever is waiting (never waiting for more), has the
//! [`IntakeService`] store it as one transaction, commits once, and answers each delivery
//! only once the fsync of the WAL that holds the commit is done. One fsync then covers many
//! deliveries, and it overlaps the writing of the next batch, so intake keeps up with a storm
//! without weakening what a 202 means: the alert is on disk.
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
    /// The batch was committed, but the fsync that would make it durable failed: it is in the
    /// database, and may not survive a power loss. A retry is counted as a repeat.
    #[error(
        "the delivery was written but the disk did not confirm it; retry in {RETRY_AFTER_SECS} s"
    )]
    NotDurable,
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

/// What the writer's thread takes from the queue.
enum Message {
    Deliver(Job),
    /// Shut down: take nothing more, store and answer what is queued, end.
    Stop,
}

/// The senders' end: cheap to clone, one per handler.
#[derive(Clone)]
pub struct IntakeWriter {
    jobs: mpsc::Sender<Message>,
}

/// The writer's end: [`IntakeQueue::run_until`] runs the writer.
pub struct IntakeQueue {
    jobs: mpsc::Receiver<Message>,
    stop: mpsc::Sender<Message>,
}

/// A bounded queue of `capacity` deliveries between the handlers and the writer.
pub fn channel(capacity: usize) -> (IntakeWriter, IntakeQueue) {
    let (sender, receiver) = mpsc::channel(capacity);
    (
        IntakeWriter {
            jobs: sender.clone(),
        },
        IntakeQueue {
            jobs: receiver,
            stop: sender,
        },
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
        let job = Message::Deliver(Job { submission, answer });
        match self.jobs.send_timeout(job, QUEUE_WAIT).await {
            Ok(()) => Ok(Queued(outcome)),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(SubmitError::QueueFull),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(SubmitError::ShuttingDown),
        }
    }
}

impl IntakeQueue {
    /// The writer: commits what is queued, batch after batch, until `shutdown`; then stops
    /// taking deliveries, commits those already queued, and returns once each is answered.
    ///
    /// The batches are written on a thread of the writer's own, which waits on the queue
    /// itself: the next batch starts as soon as the last is committed, without waiting for a
    /// runtime worker busy with requests.
    pub async fn run_until(self, service: Arc<IntakeService>, shutdown: impl Future<Output = ()>) {
        let Self { jobs, stop } = self;
        let (ended, writer_ended) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("intake-batcher".into())
            .spawn(move || {
                write_batches(jobs, &service, &runtime);
                let _ = ended.send(());
            })
            .expect("the intake writer's thread starts");
        tokio::pin!(writer_ended);
        tokio::select! {
            // The thread ended on its own: it panicked (this end holds a sender, so the queue
            // stays open until `Stop`).
            _ = &mut writer_ended => return,
            () = shutdown => {}
        }
        // Behind what is already queued, so that it is stored and answered first.
        let _ = stop.send(Message::Stop).await;
        let _ = writer_ended.await;
    }
}

/// The writer's thread: takes whatever is waiting (never waiting for more) as one batch,
/// commits it, and leaves its answers to wait for the fsync while it writes the next.
fn write_batches(
    mut jobs: mpsc::Receiver<Message>,
    service: &IntakeService,
    runtime: &tokio::runtime::Handle,
) {
    let _runtime = runtime.enter();
    // Batches committed and waiting for their fsync before they are answered.
    let mut answering = tokio::task::JoinSet::new();
    // A delivery that did not fit in the previous batch opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.blocking_recv() {
                Some(Message::Deliver(job)) => job,
                // New deliveries are refused from here; those queued are still taken.
                Some(Message::Stop) => {
                    jobs.close();
                    continue;
                }
                // Closed and drained, or every sender is gone.
                None => break,
            },
        };
        let mut alerts = first.submission.delivery.entries.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_DELIVERIES {
            let job = match jobs.try_recv() {
                Ok(Message::Deliver(job)) => job,
                Ok(Message::Stop) => {
                    jobs.close();
                    continue;
                }
                Err(_) => break,
            };
            alerts += job.submission.delivery.entries.len();
            if alerts > MAX_BATCH_ALERTS {
                carried = Some(job);
                break;
            }
            batch.push(job);
        }
        if let Some(answer) = runtime.block_on(commit(service, batch)) {
            answering.spawn(answer);
        }
        while answering.try_join_next().is_some() {}
    }
    runtime.block_on(async { while answering.join_next().await.is_some() {} });
}

/// Stores `batch` as one transaction; returns what answers each delivery of it once the
/// commit is durable, or answers them at once when it failed.
async fn commit(
    service: &IntakeService,
    batch: Vec<Job>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let (submissions, answer_to): (Vec<Submission>, Vec<_>) = batch
        .into_iter()
        .map(|job| (job.submission, job.answer))
        .unzip();
    let deliveries = submissions.len();
    let stored = AssertUnwindSafe(service.commit_batch(submissions))
        .catch_unwind()
        .await;
    let answers: Vec<Answer> = match stored {
        Ok(Ok((answers, durable))) => {
            metrics::histogram!("runbookd_intake_batch_size").record(deliveries as f64);
            return Some(async move {
                let durable = durable.wait().await;
                if let Err(error) = &durable {
                    tracing::error!(%error, deliveries, "an intake batch was committed but not confirmed on disk");
                }
                for (sender, answer) in answer_to.into_iter().zip(answers) {
                    let answer = match &durable {
                        Ok(()) => answer.map_err(SubmitError::from),
                        Err(_) => Err(SubmitError::NotDurable),
                    };
                    // The sender may have gone (its request timed out); the delivery is
                    // stored all the same.
                    let _ = sender.send(answer);
                }
            });
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
        let _ = sender.send(answer);
    }
    None
}
