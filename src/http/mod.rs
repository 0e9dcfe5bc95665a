//! The HTTP surface: routes grouped by the permission they need, plus the open health routes.
//!
//! | path | permission |
//! |---|---|
//! | `POST /ingest[?source=]`, `POST /webhook/alertmanager` | ingest |
//! | `GET /api/v1/incidents`, `GET /api/v1/incidents/{id}`, `GET /api/v1/runs/{id}` | read |
//! | `GET /api/v1/approvals[?status=]` | read |
//! | `POST /api/v1/runs`, `POST /api/v1/runs/{id}/cancel` | operate (agent, admin) |
//! | `GET /api/v1/playbooks`, `GET /api/v1/safety` | read |
//! | `POST /api/call`, `/mcp` (the agent's tools) | read, and each tool its own (see [`tools`]) |
//! | `POST /api/v1/approvals/{id}/approve`, `.../reject` | decide (approver, admin) |
//! | `POST /api/v1/pause`, `POST /api/v1/resume` | control (admin) |
//! | `POST /api/v1/breakers/{target}/reset`, `POST /api/v1/dry-run` | control (admin) |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | none |
//! | `GET /links/{token}`, `POST /links/{token}` | none: the signed one-tap link is the credential |
//! | the web page: `/`, `/login`, `/incidents/{id}`, `/approvals/{id}`, ... | see [`ui`] |

mod approvals;
mod auth;
mod backups;
mod error;
mod extract;
pub mod health;
mod incidents;
mod intake;
mod links;
mod openapi;
mod operations;
mod request_id;
mod runs;
mod safety;
pub mod serve;
pub mod tools;
mod ui;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::routing::get;
use axum::{BoxError, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::AppError;
pub use links::LinkLimiter;

use crate::auth::{Permission, TokenTable};
use crate::clock::Clock;
use crate::engine::dispatch::Dispatcher;
use crate::notify::links::LinkSigner;
use crate::store::Store;
use crate::store::safety::Limits;

/// What handlers share. External parts are behind `Arc<dyn …>` so tests can swap them.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Starts playbook runs for new incidents; `None` when no engine runs (no inventory).
    pub dispatcher: Option<Arc<Dispatcher>>,
    /// Deliveries → incidents → runs, through the one intake writer (group commit).
    pub intake: crate::engine::intake::writer::IntakeWriter,
    /// A body that came before is not parsed again.
    pub recent_parses: Arc<crate::intake::RecentParses>,
    /// The safety limits the engine enforces, for the safety overview.
    pub limits: Limits,
    /// Whether runs can happen, and if not, why: shown by `/readyz` and the web page.
    pub remediation: Arc<health::Remediation>,
    /// How long a tool call may wait for a diagnosis or for its run to reach a decision;
    /// shorter than the request timeout, so the caller gets an answer, not a 503.
    pub tool_wait: Duration,
    /// Held while the `diagnose` tool probes the estate: one diagnosis at a time.
    pub diagnosis_turn: Arc<tokio::sync::Mutex<()>>,
    /// Checks one-tap links from notifications.
    pub links: Arc<LinkSigner>,
    /// Bounds refused `/links/...` requests per client address.
    pub link_limiter: Arc<LinkLimiter>,
    /// The sinks whose links are honoured: those that carry links in the current config, so
    /// removing a sink or turning its links off revokes the links it sent.
    pub link_sinks: Arc<BTreeSet<String>>,
}

impl AppState {
    /// Tells the engine's worker (if one runs) that a run may be ready for it: after a
    /// decision, a resume or a cancel, so it does not wait for its next look.
    pub fn wake_worker(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.wake_worker();
        }
    }
}

/// How the router guards and bounds requests.
#[derive(Clone)]
pub struct HttpPolicy {
    pub tokens: Arc<TokenTable>,
    pub allow_anonymous_ingest: bool,
    pub request_timeout: Duration,
    /// The `Host` and `Origin` values `/mcp` and `/api/call` accept (DNS-rebinding protection).
    pub agent_sites: tools::rebinding::AgentSites,
    /// Where people reach runbookd (`notify.public_url`, or the listen address): the web
    /// page's forms accept this origin, as a proxy in front may rewrite `Host`.
    pub public_url: url::Url,
    /// `http.allowed_hosts`: other names the web page's forms accept as their origin.
    pub allowed_hosts: Vec<String>,
    /// How long a web page sign-in lasts.
    pub session_lifetime: Duration,
}

/// The request's span, with its id, without the query string and with one-tap link tokens
/// cut from the path: a link is a credential and must not reach the log. At info, so every
/// line logged for the request at the default level carries the id.
fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let path = request.uri().path();
    let path = if path.starts_with("/links/") {
        "/links/…"
    } else {
        path
    };
    tracing::info_span!(
        "request",
        method = %request.method(),
        path,
        request_id = request_id::of(request)
    )
}

/// Counts and times each request under its route template, never its path: ids and link
/// tokens would make a series each (and a link token is a credential).
async fn observe(request: axum::extract::Request, next: Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::telemetry::UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    crate::telemetry::observe_request(&route, response.status(), started.elapsed());
    response
}

/// The API's route templates, each with the statuses its description documents.
fn documented_routes(api: &utoipa::openapi::OpenApi) -> Vec<(&str, Vec<StatusCode>)> {
    api.paths
        .paths
        .iter()
        .map(|(route, item)| {
            let operations = [
                &item.get,
                &item.put,
                &item.post,
                &item.delete,
                &item.options,
                &item.head,
                &item.patch,
                &item.trace,
            ];
            let mut statuses: Vec<StatusCode> = operations
                .into_iter()
                .flatten()
                .flat_map(|operation| operation.responses.responses.keys())
                .filter_map(|status| status.parse().ok())
                .collect();
            statuses.sort_unstable();
            statuses.dedup();
            (route.as_str(), statuses)
        })
        .collect()
}

pub fn router(state: AppState, policy: HttpPolicy) -> Router {
    let gate = |permission| auth::Gate {
        tokens: policy.tokens.clone(),
        permission,
        allow_anonymous_ingest: policy.allow_anonymous_ingest,
    };
    let guard = |permission| from_fn_with_state(gate(permission), auth::authorize);
    let ingest = OpenApiRouter::new()
        .routes(routes!(intake::ingest))
        .routes(routes!(intake::alertmanager_webhook))
        .route_layer(guard(Permission::Ingest));
    let read = OpenApiRouter::new()
        .routes(routes!(incidents::list))
        .routes(routes!(incidents::show))
        .routes(routes!(runs::show))
        .routes(routes!(approvals::list))
        .routes(routes!(operations::playbooks))
        .routes(routes!(safety::show))
        .routes(routes!(backups::show))
        .route_layer(guard(Permission::Read));
    let operate = OpenApiRouter::new()
        .routes(routes!(runs::start))
        .routes(routes!(runs::cancel))
        .route_layer(guard(Permission::Operate));
    let decide = OpenApiRouter::new()
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .route_layer(guard(Permission::Decide));
    let control = OpenApiRouter::new()
        .routes(routes!(operations::pause))
        .routes(routes!(operations::resume))
        .routes(routes!(safety::reset_breaker))
        .routes(routes!(safety::set_dry_run))
        .route_layer(guard(Permission::Control));
    // Each tool checks its own permission; reading is the least any caller needs. Host and
    // Origin are checked first, for both endpoints alike.
    let tools = OpenApiRouter::new()
        .routes(routes!(tools::bridge::call))
        .route_service(
            "/mcp",
            tools::mcp::service(state.clone(), state.max_body_bytes),
        )
        .route_layer(guard(Permission::Read))
        .route_layer(from_fn_with_state(
            policy.agent_sites.clone(),
            tools::rebinding::guard,
        ));
    let open = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(links::show, links::decide));

    let (api, description) = OpenApiRouter::new()
        .merge(ingest)
        .merge(read)
        .merge(operate)
        .merge(decide)
        .merge(control)
        .merge(tools)
        .merge(open)
        .split_for_parts();
    let description = Arc::new(openapi::complete(description));
    crate::telemetry::register_routes(documented_routes(&description));
    crate::telemetry::register_routes([("/openapi.json", vec![StatusCode::OK])]);
    let api = api.route(
        "/openapi.json",
        get(move || async move { Json(description.as_ref().clone()) }),
    );

    let max_body_bytes = state.max_body_bytes;
    api.merge(ui::routes(
        &state,
        policy.tokens.clone(),
        ui::Sites::new(&policy.public_url, &policy.allowed_hosts),
        policy.session_lifetime,
    ))
    .fallback(|| async { AppError::NotFound("no such path".to_owned()) })
    .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
    .layer(DefaultBodyLimit::max(max_body_bytes))
    .layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                AppError::Timeout
            }))
            .timeout(policy.request_timeout),
    )
    .layer(axum::middleware::from_fn(observe))
    .layer(
        ServiceBuilder::new()
            .map_request(request_id::drop_unfit)
            .layer(SetRequestIdLayer::new(
                request_id::HEADER.clone(),
                MakeRequestUuid,
            ))
            .layer(PropagateRequestIdLayer::new(request_id::HEADER.clone()))
            .layer(axum::middleware::from_fn(request_id::scope)),
    )
    .with_state(state)
}
