//! Building and running the service. [`Application::build`] binds the port first, so a test can
//! ask for port 0 and read the real one from [`Application::local_addr`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::TokenTable;
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::dispatch::Dispatcher;
use crate::http::{self, AppState, HttpPolicy};
use crate::store::Store;
use crate::telemetry;

/// After shutdown is asked for, in-flight requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
}

impl Application {
    /// `dispatcher` starts runs for new incidents; without it incidents are only recorded.
    pub async fn build(
        config: &Config,
        tokens: TokenTable,
        clock: Arc<dyn Clock>,
        dispatcher: Option<Arc<Dispatcher>>,
    ) -> anyhow::Result<Self> {
        let store = Store::open(&config.database).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        if tokens.tokens().is_empty() && !config.http.allow_anonymous_ingest {
            tracing::warn!(
                "no tokens are configured: every API call will get 401 (set RUNBOOKD_ADMIN_TOKEN or [[tokens]])"
            );
        }
        if config.http.allow_anonymous_ingest {
            tracing::warn!("anonymous ingest is allowed by the config");
        }
        let state = AppState {
            store: store.clone(),
            clock,
            metrics: telemetry::metrics_handle(),
            max_body_bytes: config.http.max_body_bytes,
            dispatcher,
            tool_wait: (config.request_timeout() * 2 / 3).min(Duration::from_secs(20)),
        };
        let policy = HttpPolicy {
            tokens: Arc::new(tokens),
            allow_anonymous_ingest: config.http.allow_anonymous_ingest,
            request_timeout: config.request_timeout(),
            mcp_allowed_hosts: config.mcp_allowed_hosts(),
        };
        Ok(Self {
            listener,
            router: http::router(state, policy),
            store,
        })
    }

    /// The database, for an engine that runs beside the HTTP server.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (bounded) and closes
    /// the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stopping_tx.send(());
        });
        tokio::select! {
            result = server => result.context("the HTTP server failed")?,
            () = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway"),
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
