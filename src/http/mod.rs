//! The HTTP surface: routes grouped by the permission they need, plus the open health routes.
//!
//! | path | permission |
//! |---|---|
//! | `POST /ingest[?source=]`, `POST /webhook/alertmanager` | ingest |
//! | `GET /api/v1/incidents`, `GET /api/v1/incidents/{id}`, `GET /api/v1/runs/{id}` | read |
//! | `GET /api/v1/approvals[?status=]` | read |
//! | `POST /api/v1/runs`, `POST /api/v1/runs/{id}/cancel` | operate (agent, admin) |
//! | `GET /api/v1/playbooks` | read |
//! | `POST /api/v1/approvals/{id}/approve`, `.../reject` | decide (approver, admin) |
//! | `POST /api/v1/pause`, `POST /api/v1/resume` | control (admin) |
//! | `GET /healthz`, `/readyz`, `/metrics` | none |
//! | the web page: `/`, `/login`, `/incidents/{id}`, `/approvals/{id}`, ... | see [`ui`] |

mod approvals;
mod auth;
mod error;
mod extract;
mod health;
mod incidents;
mod intake;
mod operations;
mod runs;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

pub use error::AppError;

use crate::auth::{Permission, TokenTable};
use crate::clock::Clock;
use crate::engine::dispatch::Dispatcher;
use crate::store::Store;

/// What handlers share. External parts are behind `Arc<dyn …>` so tests can swap them.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Starts playbook runs for new incidents; `None` when no engine runs (no inventory).
    pub dispatcher: Option<Arc<Dispatcher>>,
}

/// How the router guards and bounds requests.
#[derive(Clone)]
pub struct HttpPolicy {
    pub tokens: Arc<TokenTable>,
    pub allow_anonymous_ingest: bool,
    pub request_timeout: Duration,
}

pub fn router(state: AppState, policy: HttpPolicy) -> Router {
    let gate = |permission| auth::Gate {
        tokens: policy.tokens.clone(),
        permission,
        allow_anonymous_ingest: policy.allow_anonymous_ingest,
    };
    let ingest = Router::new()
        .route("/ingest", post(intake::ingest))
        .route("/webhook/alertmanager", post(intake::alertmanager_webhook))
        .route_layer(from_fn_with_state(
            gate(Permission::Ingest),
            auth::authorize,
        ));
    let read = Router::new()
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/playbooks", get(operations::playbooks))
        .route_layer(from_fn_with_state(gate(Permission::Read), auth::authorize));
    let operate = Router::new()
        .route("/api/v1/runs", post(runs::start))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route_layer(from_fn_with_state(
            gate(Permission::Operate),
            auth::authorize,
        ));
    let decide = Router::new()
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/reject", post(approvals::reject))
        .route_layer(from_fn_with_state(
            gate(Permission::Decide),
            auth::authorize,
        ));
    let control = Router::new()
        .route("/api/v1/pause", post(operations::pause))
        .route("/api/v1/resume", post(operations::resume))
        .route_layer(from_fn_with_state(
            gate(Permission::Control),
            auth::authorize,
        ));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));

    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .merge(ingest)
        .merge(read)
        .merge(operate)
        .merge(decide)
        .merge(control)
        .merge(open)
        .merge(ui::routes(policy.tokens.clone()))
        .fallback(|| async { AppError::NotFound("no such path".to_owned()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    AppError::Timeout
                }))
                .timeout(policy.request_timeout),
        )
        .with_state(state)
}
