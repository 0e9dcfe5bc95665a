//! The one intake writer: a thread of its own owns intake's SQLite connection and does all of
//! intake's writing on it.
//!
//! Group commit: handlers queue their delivery on a bounded channel and wait; the thread takes
//! whatever is waiting (never waiting for more), stores it as one transaction, commits once,
//! and hands the answers to the WAL-sync thread, which answers each delivery only once the
//! fsync of the WAL that holds the commit is done. One fsync then covers many deliveries, and
//! it overlaps the writing of the next batch, so intake keeps up with a storm without
//! weakening what a 202 means: the alert is on disk. The thread takes the queue itself and
//! hands answers straight on, so a batch costs no hop through the runtime's workers.
//!
//! A full queue answers [`SubmitError::QueueFull`] after a short bounded wait (503 with
//! `Retry-After`), so memory stays bounded. On shutdown the writer stops taking deliveries
//! (new ones get [`SubmitError::ShuttingDown`]), commits every delivery already queued and
//! answers it, then ends.

use std::fs::File;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::{AlertOutcome, IntakeService, Rules, Submission};
use crate::store::intake::RecentBodies;
use crate::store::{Store, StoreError};

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

/// While deliveries keep waiting, the writer keeps the writer pool's connection from one batch
/// to the next for at most this long; then it gives it back, so another writer (the engine,
/// an approval) waits at most about this long in a storm.
const HOLD_AT_MOST: Duration = Duration::from_millis(10);

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

/// What the writer takes from the queue.
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

/// The writer's end: [`IntakeQueue::run_until`] has intake's thread serve it.
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
        // means the writer itself is gone.
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
    /// Has intake's thread commit what is queued, batch after batch, until `shutdown`; then
    /// it takes no more deliveries, commits those already queued, and this returns once each
    /// is answered.
    pub async fn run_until(self, service: Arc<IntakeService>, shutdown: impl Future<Output = ()>) {
        let Self { jobs, stop } = self;
        let (ended, writer_ended) = oneshot::channel();
        let queue = Deliveries {
            jobs,
            carried: None,
            ended,
        };
        if service.writer.work.send(Work::Serve(queue)).is_err() {
            tracing::error!("intake's thread has stopped: no delivery can be stored");
            return;
        }
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

/// The queue as intake's thread serves it.
struct Deliveries {
    jobs: mpsc::Receiver<Message>,
    /// A delivery that did not fit in the previous batch opens the next one.
    carried: Option<Job>,
    /// Told once the queue is stopped and every delivery of it answered.
    ended: oneshot::Sender<()>,
}

impl Deliveries {
    /// Whether a delivery is waiting for the next batch.
    fn has_waiting(&self) -> bool {
        self.carried.is_some() || !self.jobs.is_empty()
    }

    /// Waits for a delivery, then takes whatever else is waiting (never waiting for more) up
    /// to a batch's bounds; `None` once the queue is stopped and drained. Cancel-safe: nothing
    /// is taken before the first delivery arrives, and nothing is awaited after.
    async fn next_batch(&mut self) -> Option<Vec<Job>> {
        let first = match self.carried.take() {
            Some(job) => job,
            None => loop {
                match self.jobs.recv().await? {
                    Message::Deliver(job) => break job,
                    // New deliveries are refused from here; those queued are still taken.
                    Message::Stop => self.jobs.close(),
                }
            },
        };
        let mut alerts = first.submission.delivery.entries.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_DELIVERIES {
            let job = match self.jobs.try_recv() {
                Ok(Message::Deliver(job)) => job,
                Ok(Message::Stop) => {
                    self.jobs.close();
                    continue;
                }
                Err(_) => break,
            };
            alerts += job.submission.delivery.entries.len();
            if alerts > MAX_BATCH_ALERTS {
                self.carried = Some(job);
                break;
            }
            batch.push(job);
        }
        Some(batch)
    }
}

/// Work for intake's connection: given it (or why it cannot be opened) on intake's thread,
/// while the writer pool's connection is held.
pub(super) type OnConnection = Box<dyn FnOnce(Result<&mut Connected, StoreError>, &Rules) + Send>;

/// What intake's thread is asked to do besides deliveries.
enum Work {
    Run(OnConnection),
    /// Group-commit this queue's deliveries until it is stopped.
    Serve(Deliveries),
}

/// Intake's thread, as the service holds it: it ends once the service is gone and the queue
/// it serves, if any, is stopped.
pub(super) struct WriterThread {
    work: mpsc::UnboundedSender<Work>,
}

impl WriterThread {
    /// Starts the thread; its connection is opened on first use. Call within the runtime:
    /// the thread waits on the runtime's channels and pools.
    pub(super) fn spawn(store: Store, rules: Arc<Rules>) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let (work, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("intake-writer".into())
            .spawn(move || {
                let writer = Writer {
                    store,
                    rules,
                    conn: None,
                    held: None,
                };
                runtime.block_on(writer.run(queue));
            })
            .expect("the intake writer's thread starts");
        Self { work }
    }

    pub(super) fn run(&self, job: OnConnection) -> Result<(), StoreError> {
        self.work
            .send(Work::Run(job))
            .map_err(|_| StoreError::Other("the intake writer's thread has stopped".into()))
    }
}

/// What intake's thread owns.
struct Writer {
    store: Store,
    rules: Arc<Rules>,
    conn: Option<Connected>,
    /// The writer pool's connection while intake holds it, and since when. Giving it back
    /// costs sqlx a round trip to its own thread (it pings the connection), which measured
    /// about 150 µs a batch under a storm, so it is kept while more deliveries wait; see
    /// [`HOLD_AT_MOST`].
    held: Option<(PoolConnection<sqlx::Sqlite>, Instant)>,
}

impl Writer {
    async fn run(mut self, mut work: mpsc::UnboundedReceiver<Work>) {
        let mut serving: Option<Deliveries> = None;
        let mut service_alive = true;
        loop {
            tokio::select! {
                // The service's own jobs are rare (time-outs) and go first.
                biased;
                next = work.recv(), if service_alive => match next {
                    Some(Work::Run(job)) => match self.hold().await {
                        Ok(()) => job(connected(&mut self.conn, &self.store), &self.rules),
                        Err(error) => job(Err(error), &self.rules),
                    },
                    Some(Work::Serve(queue)) => serving = Some(queue),
                    None => service_alive = false,
                },
                batch = next_batch(&mut serving), if serving.is_some() => match batch {
                    Some(batch) => self.commit(batch).await,
                    None => {
                        // The last batches' answers wait for their fsync: the queue has ended
                        // once they are out.
                        if let Some(conn) = &self.conn {
                            let _ = conn.synced().wait().await;
                        }
                        // Given back before the queue says it has ended, so that closing the
                        // store does not wait for it.
                        self.held = None;
                        if let Some(queue) = serving.take() {
                            let _ = queue.ended.send(());
                        }
                    }
                },
                else => break,
            }
            self.release_unless_waiting(serving.as_ref());
        }
    }

    /// Holds the writer pool's connection, so that nothing else writes meanwhile.
    async fn hold(&mut self) -> Result<(), StoreError> {
        if self.held.is_none() {
            self.held = Some((self.store.hold_writer().await?, Instant::now()));
        }
        Ok(())
    }

    /// Gives the writer pool's connection back, unless deliveries wait and it has been held
    /// for less than [`HOLD_AT_MOST`].
    fn release_unless_waiting(&mut self, serving: Option<&Deliveries>) {
        let keep = serving.is_some_and(Deliveries::has_waiting)
            && self
                .held
                .as_ref()
                .is_some_and(|(_, since)| since.elapsed() < HOLD_AT_MOST);
        if !keep {
            self.held = None;
        }
    }

    /// Stores `batch` as one transaction while holding the writer pool's connection (nothing
    /// else writes meanwhile); once committed, leaves its answers to the WAL-sync thread. A
    /// batch that failed is answered at once.
    async fn commit(&mut self, batch: Vec<Job>) {
        let (submissions, answer_to): (Vec<Submission>, Vec<_>) = batch
            .into_iter()
            .map(|job| (job.submission, job.answer))
            .unzip();
        let deliveries = submissions.len();
        let held = self.hold().await;
        let rules = &self.rules;
        let recorded = match held {
            Ok(()) => connected(&mut self.conn, &self.store).map(|conn| {
                let recorded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    rules.record_batch(&mut conn.conn, &mut conn.bodies, &submissions)
                }));
                (recorded, &*conn)
            }),
            Err(error) => Err(error),
        };
        let error = match recorded {
            Ok((Ok(Ok((answers, started))), conn)) => {
                metrics::histogram!("runbookd_intake_batch_size").record(deliveries as f64);
                let wake = rules
                    .dispatcher
                    .as_ref()
                    .filter(|_| started)
                    .map(|dispatcher| dispatcher.wake.clone());
                conn.after_sync(move |synced| {
                    if let Err(error) = &synced {
                        tracing::error!(%error, deliveries, "an intake batch was committed but not confirmed on disk");
                    } else if let Some(wake) = wake {
                        wake.notify_one();
                    }
                    for (sender, answer) in answer_to.into_iter().zip(answers) {
                        let answer = match &synced {
                            Ok(()) => answer.map_err(SubmitError::from),
                            Err(_) => Err(SubmitError::NotDurable),
                        };
                        // The sender may have gone (its request timed out); the delivery
                        // is stored all the same.
                        let _ = sender.send(answer);
                    }
                });
                return;
            }
            Ok((Ok(Err(error)), _)) | Err(error) => {
                tracing::error!(%error, deliveries, "an intake batch could not be committed");
                SubmitError::from(error)
            }
            Ok((Err(panic), _)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%message, deliveries, "the intake writer panicked; the batch rolled back");
                SubmitError::Panicked
            }
        };
        for sender in answer_to {
            let _ = sender.send(Err(error.clone()));
        }
    }
}

/// Intake's connection, opened on first use.
fn connected<'a>(
    conn: &'a mut Option<Connected>,
    store: &Store,
) -> Result<&'a mut Connected, StoreError> {
    if conn.is_none() {
        *conn = Some(Connected::open(store)?);
    }
    Ok(conn.as_mut().expect("opened above"))
}

/// The served queue's next batch; never ready without one.
async fn next_batch(serving: &mut Option<Deliveries>) -> Option<Vec<Job>> {
    match serving {
        Some(queue) => queue.next_batch().await,
        None => std::future::pending().await,
    }
}

/// Intake's connection, and the thread that fsyncs the WAL its commits go to.
///
/// The connection commits at `synchronous = NORMAL`: SQLite writes each commit to the WAL but
/// does not fsync it. The WAL-sync thread does, and a commit counts as stored only once the
/// fsync that covers it is done ([`Connected::after_sync`]): as with `synchronous = FULL`,
/// what was answered is on disk, but the fsync of one batch overlaps the writing of the next,
/// and one fsync covers every commit made meanwhile. Unlike FULL, a reader may see a batch a
/// moment before its fsync, and a batch whose fsync failed stays in the database although it
/// was refused (the worker is woken only once a batch is durable). The WAL's file stays the
/// same while the connection is open (SQLite removes it only when the last connection
/// closes).
pub(super) struct Connected {
    pub(super) conn: Connection,
    /// The bodies this connection stored last, which repeats find theirs among.
    pub(super) bodies: RecentBodies,
    /// To the WAL-sync thread, which holds the WAL's file; it ends with this connection.
    sync: std::sync::mpsc::Sender<AfterSync>,
}

/// What an fsync of the WAL gave, shared by every commit it covered.
type Synced = Result<(), Arc<std::io::Error>>;

/// Runs once the fsync that covers a commit is done, on the WAL-sync thread.
type AfterSync = Box<dyn FnOnce(Synced) + Send>;

impl Connected {
    /// Opens intake's connection and starts the thread that fsyncs its WAL.
    fn open(store: &Store) -> Result<Self, StoreError> {
        let conn = store.open_sync()?;
        let wal_path = store.wal_path();
        let wal = File::open(&wal_path).map_err(|e| StoreError::Io(e.into()))?;
        // As SQLite does before a WAL's first sync: the WAL's directory entry is on disk too.
        let dir = wal_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Io(e.into()))?;
        Ok(Self {
            sync: spawn_sync_thread(wal, store.open_sync()?),
            conn,
            bodies: RecentBodies::default(),
        })
    }

    /// Runs `then` once the WAL, with everything committed so far, is on disk (or the fsync
    /// failed).
    fn after_sync(&self, then: impl FnOnce(Synced) + Send + 'static) {
        if let Err(std::sync::mpsc::SendError(then)) = self.sync.send(Box::new(then)) {
            then(Err(Arc::new(std::io::Error::other(
                "the intake WAL-sync thread has stopped",
            ))));
        }
    }

    /// [`Self::after_sync`] as a future.
    pub(super) fn synced(&self) -> Durable {
        let (done, synced) = oneshot::channel();
        self.after_sync(move |result| {
            let _ = done.send(result);
        });
        Durable(synced)
    }
}

/// A commit on intake's connection, waiting for the fsync that makes it durable.
#[must_use = "a commit is stored only once it is durable"]
pub(super) struct Durable(oneshot::Receiver<Synced>);

impl Durable {
    /// Waits for the fsync. An error means the commit is in the database but the disk did not
    /// confirm it: it may not survive a power loss.
    pub(super) async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Io(Box::new(error))),
            Err(_) => Err(StoreError::Other(
                "the intake WAL-sync thread has stopped".into(),
            )),
        }
    }
}

/// How often the WAL-sync thread asks for a checkpoint of the WAL into the database while
/// commits come in.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);

/// Starts the thread that fsyncs `wal`: it takes every commit waiting, fsyncs once, and runs
/// what waited on each. At most every [`CHECKPOINT_EVERY`] it asks the checkpoint thread for
/// a checkpoint, so the copying stays off both the writer's path and the WAL's fsyncs (a
/// checkpoint took 1 to 3 ms under a storm, and every answer waited behind it when this
/// thread ran it), and a page that changed many times meanwhile is copied once. It ends when
/// its connection is closed, and the checkpoint thread with it.
fn spawn_sync_thread(wal: File, checkpointer: Connection) -> std::sync::mpsc::Sender<AfterSync> {
    let (requests, queue) = std::sync::mpsc::channel::<AfterSync>();
    let checkpoint = spawn_checkpoint_thread(checkpointer);
    std::thread::Builder::new()
        .name("intake-wal-sync".into())
        .spawn(move || {
            // Once an fsync fails, Linux may have dropped the pages it could not write, so a
            // later fsync that succeeds proves nothing: every later commit is refused as not
            // durable until runbookd restarts (and SQLite recovers the WAL).
            let mut failed: Option<Arc<std::io::Error>> = None;
            let mut asked = Instant::now();
            while let Ok(first) = queue.recv() {
                // Every commit made before this fsync starts, and none after.
                let waiting: Vec<_> = std::iter::once(first).chain(queue.try_iter()).collect();
                if failed.is_none()
                    && let Err(error) = wal.sync_data()
                {
                    tracing::error!(%error, "cannot fsync the database's WAL: intake refuses deliveries until runbookd restarts");
                    failed = Some(Arc::new(error));
                }
                for then in waiting {
                    then(match &failed {
                        Some(error) => Err(error.clone()),
                        None => Ok(()),
                    });
                }
                // A request while one is pending or running is dropped: that one copies it.
                if failed.is_none()
                    && asked.elapsed() >= CHECKPOINT_EVERY
                    && checkpoint.try_send(()).is_ok()
                {
                    asked = Instant::now();
                }
            }
        })
        .expect("the intake WAL-sync thread starts");
    requests
}

/// Starts the thread that checkpoints on `checkpointer` once per request. A PASSIVE
/// checkpoint waits for no one; the WAL starts over at the next commit after one that copied
/// it all. It ends once the WAL-sync thread has.
fn spawn_checkpoint_thread(checkpointer: Connection) -> std::sync::mpsc::SyncSender<()> {
    let (requests, asked) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("intake-checkpoint".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                if let Err(error) =
                    checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%error, "cannot checkpoint the database's WAL");
                }
            }
        })
        .expect("the intake checkpoint thread starts");
    requests
}
