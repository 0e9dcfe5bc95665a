//! Building and running the service. [`Application::build`] takes the database's lock and
//! binds the port first, so a second process on the same database is refused before it does
//! anything, and a test can ask for port 0 and read the real one from
//! [`Application::local_addr`]. The intake writer, the engine's worker (when there are
//! playbooks and an estate), the notifier (when sinks are configured), the incidents' timeouts,
//! the metrics' upkeep and the pruner (when `[retention]` sets an age) run beside the HTTP
//! server under one shutdown: the worker gives back the run it holds, the server drains, the
//! intake writer commits what is queued, then the database closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::TokenTable;
use crate::clock::Clock;
use crate::config::{Config, Notify};
use crate::engine::dispatch::Dispatcher;
use crate::engine::estate::Estate;
use crate::engine::intake::writer::{self as intake_writer, IntakeQueue};
use crate::engine::intake::{IntakeService, Lifecycle};
use crate::engine::worker::{Engine, PinnedPlaybooks, unique_owner};
use crate::http::health::Remediation;
use crate::http::{self, AppState, HttpPolicy, LinkLimiter};
use crate::notify::Notifier;
use crate::notify::links::{LinkSigner, load_or_create_key};
use crate::playbook::PlaybookFile;
use crate::store::Store;
use crate::store::lock::DatabaseLock;
use crate::store::retention::{self, Retention};
use crate::telemetry;

/// How often incidents of senders that never resolve are checked for their resolve timeout.
const INCIDENT_TIMEOUTS_EVERY: Duration = Duration::from_secs(60);

/// After shutdown is asked for, in-flight requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the engine runs on: the playbooks loaded from their files, and the estate's executors.
pub struct EngineParts {
    pub playbooks: Vec<PlaybookFile>,
    pub estate: Arc<Estate>,
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// How the accept loop bounds client connections.
    connections: http::serve::ConnectionLimits,
    store: Store,
    notifier: Option<Notifier>,
    engine: Option<Engine>,
    /// Stores deliveries (through `intake_queue`'s writer) and times out the incidents of
    /// senders that never resolve, in the background.
    intake: Arc<IntakeService>,
    /// What the pruner removes, and how often it runs; off when nothing is configured.
    retention: Arc<Retention>,
    prune_every: Duration,
    /// The intake writer's end of the handlers' queue.
    intake_queue: IntakeQueue,
    clock: Arc<dyn Clock>,
    /// This process's name in leases, the audit trail and the database lock.
    owner: String,
    /// Held until the application is dropped, after the database is closed.
    _lock: DatabaseLock,
}

/// This process's hold on its database: the lock, and the lease owner it is taken for.
pub struct Claim {
    lock: DatabaseLock,
    owner: String,
}

impl Application {
    /// Takes `config`'s database for this process, or says which process has it. `serve`
    /// claims first, before it writes anything (the lab's files go beside the database).
    pub fn claim(config: &Config, clock: &dyn Clock) -> anyhow::Result<Claim> {
        let owner = unique_owner();
        let lock = DatabaseLock::acquire(&config.database.path, &owner, clock.now())?;
        Ok(Claim { lock, owner })
    }

    /// [`Self::claim`], then [`Self::build_claimed`].
    pub async fn build(
        config: &Config,
        tokens: TokenTable,
        notify: Notify,
        clock: Arc<dyn Clock>,
        engine: Option<EngineParts>,
    ) -> anyhow::Result<Self> {
        let claim = Self::claim(config, clock.as_ref())?;
        Self::build_claimed(claim, config, tokens, notify, clock, engine).await
    }

    /// `tokens` and `notify` come resolved (secrets read, problems reported with their lines)
    /// from `config`; with `engine`, new incidents start runs and a worker drives them;
    /// without it incidents are only recorded.
    pub async fn build_claimed(
        claim: Claim,
        config: &Config,
        tokens: TokenTable,
        notify: Notify,
        clock: Arc<dyn Clock>,
        engine: Option<EngineParts>,
    ) -> anyhow::Result<Self> {
        let Claim { lock, owner } = claim;
        let store = Store::open(&config.database).await?;
        let listener = http::serve::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        if tokens.tokens().is_empty() && !config.http.allow_anonymous_ingest {
            tracing::warn!(
                "no tokens are configured: every API call will get 401 (set RUNBOOKD_ADMIN_TOKEN or [[tokens]])"
            );
        }
        if config.http.allow_anonymous_ingest {
            tracing::warn!("anonymous ingest is allowed by the config");
        }
        // Sessions of tokens no longer in the config end here (and at every page request).
        let forgotten = store
            .forget_sessions(tokens.tokens().iter().map(|t| t.name()), clock.now())
            .await?;
        if forgotten > 0 {
            tracing::info!(
                sessions = forgotten,
                "ended web sessions that expired or whose token is gone"
            );
        }
        let links = Arc::new(LinkSigner::new(
            &load_or_create_key(&config.link_key_path())?,
            notify.link_ttl,
        ));
        let public_url = public_url(&notify, listener.local_addr()?)?;
        let link_limiter = Arc::new(LinkLimiter::per_minute(notify.link_requests_per_minute));
        let link_sinks = Arc::new(
            notify
                .sinks
                .iter()
                .filter(|sink| sink.links)
                .map(|sink| sink.name.clone())
                .collect(),
        );
        let notifier = if notify.sinks.is_empty() {
            // Off now: when sinks come back, they start from then, not from here.
            store.drop_notify_cursor().await?;
            None
        } else {
            // Placed now, before any request, so nothing that happens from here is missed.
            store.notify_cursor().await?;
            tracing::info!(sinks = notify.sinks.len(), %public_url, "notifications are on");
            Some(Notifier::new(
                store.clone(),
                clock.clone(),
                links.clone(),
                notify,
                public_url.clone(),
            )?)
        };
        // Installed before anything is registered with it.
        let metrics = telemetry::metrics_handle();
        if let Some(parts) = &engine {
            telemetry::register_playbooks(parts.playbooks.iter().map(|file| &file.playbook));
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let dispatcher = match &engine {
            Some(parts) => Some(Arc::new(
                Dispatcher::new(&parts.playbooks, parts.estate.clone(), wake.clone())
                    .map_err(|e| anyhow::anyhow!(e))?,
            )),
            None => None,
        };
        let engine = engine.map(|parts| Engine {
            store: store.clone(),
            estate: parts.estate,
            playbooks: Arc::new(parts.playbooks.into_iter().map(|f| f.playbook).collect()),
            pinned: PinnedPlaybooks::default(),
            clock: clock.clone(),
            owner: owner.clone(),
            lease_for: Duration::from_secs(config.engine.lease_secs),
            limits: config.engine.limits(),
            wake,
            idle: Duration::from_millis(config.engine.idle_poll_ms),
        });
        let remediation = Arc::new(match &dispatcher {
            Some(_) => Remediation::on(),
            None => Remediation::off(config.missing_estate()),
        });
        let intake = Arc::new(IntakeService::new(
            store.clone(),
            dispatcher.clone(),
            Lifecycle::from(&config.incidents),
        ));
        let (intake_writer, intake_queue) = intake_writer::channel(intake_writer::QUEUE_CAPACITY);
        let state = AppState {
            store: store.clone(),
            clock: clock.clone(),
            metrics,
            max_body_bytes: config.http.max_body_bytes,
            intake: intake_writer,
            recent_parses: Arc::default(),
            dispatcher,
            limits: config.engine.limits(),
            remediation,
            tool_wait: (config.request_timeout() * 2 / 3).min(Duration::from_secs(20)),
            diagnosis_turn: Default::default(),
            links,
            link_limiter,
            link_sinks,
        };
        let policy = HttpPolicy {
            tokens: Arc::new(tokens),
            allow_anonymous_ingest: config.http.allow_anonymous_ingest,
            request_timeout: config.request_timeout(),
            agent_sites: http::tools::rebinding::AgentSites::new(
                &config.tool_allowed_hosts(),
                config.tool_allowed_origins(&public_url),
            ),
            public_url,
            allowed_hosts: config.http.allowed_hosts.clone(),
            session_lifetime: config.session_lifetime(),
        };
        Ok(Self {
            listener,
            router: http::router(state, policy),
            connections: config.connection_limits(),
            store,
            notifier,
            engine,
            intake,
            retention: Arc::new(config.retention.policy()),
            prune_every: config.retention.every(),
            intake_queue,
            clock,
            owner,
            _lock: lock,
        })
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This process's lease owner, `runbookd-<uuid>`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether a worker drives runs (there are playbooks and an estate).
    pub fn has_engine(&self) -> bool {
        self.engine.is_some()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes: then the worker gives back the run it holds while
    /// in-flight requests drain (bounded), and the database closes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (notifier_stop, mut notifier_stopped) = tokio::sync::watch::channel(false);
        let notifier = self.notifier.map(|notifier| {
            tokio::spawn(notifier.run_until(async move {
                let _ = notifier_stopped.changed().await;
            }))
        });
        let (worker_stop, mut worker_stopped) = tokio::sync::watch::channel(false);
        let worker = self.engine.map(|engine| {
            tokio::spawn(engine.run_until(async move {
                let _ = worker_stopped.changed().await;
            }))
        });
        let (writer_stop, mut writer_stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(
            self.intake_queue
                .run_until(self.intake.clone(), async move {
                    let _ = writer_stopped.changed().await;
                }),
        );
        let (timeouts_stop, mut timeouts_stopped) = tokio::sync::watch::channel(false);
        let timeouts = tokio::spawn(self.intake.clone().time_out_until(
            self.clock.clone(),
            INCIDENT_TIMEOUTS_EVERY,
            async move {
                let _ = timeouts_stopped.changed().await;
            },
        ));
        let (upkeep_stop, mut upkeep_stopped) = tokio::sync::watch::channel(false);
        let upkeep = tokio::spawn(telemetry::upkeep_until(async move {
            let _ = upkeep_stopped.changed().await;
        }));
        let (pruner_stop, mut pruner_stopped) = tokio::sync::watch::channel(false);
        let pruner = (!self.retention.is_off()).then(|| {
            tokio::spawn(retention::prune_until(
                self.store.clone(),
                self.retention.clone(),
                self.clock.clone(),
                self.prune_every,
                async move {
                    let _ = pruner_stopped.changed().await;
                },
            ))
        });
        let draining = async move {
            shutdown.await;
            tracing::info!("shutting down: giving back runs, draining in-flight requests");
            let _ = worker_stop.send(true);
        };
        http::serve::serve(
            self.listener,
            self.router,
            self.connections,
            DRAIN_TIMEOUT,
            draining,
        )
        .await;
        // After the server: the requests it drained were waiting on the writer. Deliveries
        // still queued are committed before the writer ends.
        let _ = writer_stop.send(true);
        if let Err(error) = writer.await {
            tracing::error!(%error, "the intake writer failed");
        }
        if let Some(worker) = worker
            && let Err(error) = worker.await
        {
            tracing::error!(%error, "the engine's worker failed");
        }
        let _ = notifier_stop.send(true);
        if let Some(notifier) = notifier {
            let _ = notifier.await;
        }
        let _ = timeouts_stop.send(true);
        let _ = timeouts.await;
        let _ = upkeep_stop.send(true);
        let _ = upkeep.await;
        let _ = pruner_stop.send(true);
        if let Some(pruner) = pruner {
            let _ = pruner.await;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Where links point: the configured `public_url`, or the address runbookd listens on (an
/// unspecified address becomes loopback, and only this machine can follow the links). Always
/// ends in `/`, so links join onto it.
fn public_url(notify: &Notify, local: SocketAddr) -> anyhow::Result<url::Url> {
    let mut url = match &notify.public_url {
        Some(url) => url.clone(),
        None => {
            let mut address = local;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                if !notify.sinks.is_empty() {
                    tracing::warn!(
                        "notify.public_url is not set: links point at {address}, which phones cannot reach"
                    );
                }
            }
            url::Url::parse(&format!("http://{address}/"))?
        }
    };
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called, not
/// when it is first polled: a signal sent as soon as "listening" is logged stops the service
/// gracefully instead of killing it by the default action. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(%error, "cannot listen for SIGTERM or Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
