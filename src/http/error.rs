//! The one error type of the HTTP layer. Every failure becomes
//! `{"error":{"code":"...","message":"..."},"request_id":"..."}` with the right status. Messages for 4xx tell the
//! caller what to change; 5xx causes are logged here and never returned.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::dispatch::StartError;
use crate::engine::intake::writer::{RETRY_AFTER_SECS, SubmitError};
use crate::intake::IntakeError;
use crate::store::StoreError;
use crate::store::approvals::ApprovalError;
use crate::store::runs::RunError;

/// The body of every error answer: what `IntoResponse` writes and the API description shows.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
    /// The request's id, as in its `x-request-id` answer header and in the service's log
    /// lines for it; quote it when reporting a problem.
    request_id: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `invalid_payload`, ...
    code: &'static str,
    /// What to change, for a person.
    message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("this path does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// It existed and no longer does (a spent or expired link).
    #[error("{0}")]
    Gone(String),
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests from one address; retry after the given number of seconds.
    #[error("too many requests from your address; retry in {0} seconds")]
    TooManyRequests(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("the request took too long; retry it")]
    Timeout,
    /// A host or API runbookd depends on failed; the message says which and how.
    #[error("{0}")]
    Upstream(String),
    /// A host or API runbookd depends on did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The database cannot answer now (locked, full, failing), or did not answer at all; the
    /// message says which, and that nothing was stored.
    #[error("{}", unavailable_message(.0))]
    Unavailable(#[source] StoreError),
    /// Intake cannot take the delivery now (its queue is full, it is stopping, or the database
    /// cannot take the write); the message says why, `Retry-After` when to try again.
    #[error("{}", intake_unavailable_message(.0))]
    IntakeUnavailable(SubmitError),
    #[error("internal error; the cause is in the service log")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Intake(IntakeError::UnknownSource(_) | IntakeError::InvalidJson(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Intake(IntakeError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout | Self::Unavailable(_) | Self::IntakeUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::BadRequest(_) => "bad_request",
            Self::Intake(IntakeError::UnknownSource(_)) => "unknown_source",
            Self::Intake(IntakeError::InvalidJson(_)) => "invalid_json",
            Self::Intake(IntakeError::Invalid(_)) => "invalid_payload",
            Self::Timeout => "timeout",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::Unavailable(_) | Self::IntakeUnavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// Why the database cannot answer, that a failed write left nothing behind (every write is one
/// transaction), and when to retry.
fn unavailable_message(error: &StoreError) -> String {
    match error.retry_after() {
        Some(wait) => format!("{error}; nothing was stored; retry in {} s", wait.as_secs()),
        None => "the database does not answer; retry it".to_owned(),
    }
}

fn intake_unavailable_message(error: &SubmitError) -> String {
    match error {
        SubmitError::Store(store) => format!(
            "the delivery could not be stored: {}",
            unavailable_message(store)
        ),
        _ => error.to_string(),
    }
}

/// The one place a storage failure becomes an answer: one that clears on its own is 503 with
/// `Retry-After`, anything else 500.
impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        if error.retry_after().is_some() {
            Self::Unavailable(error)
        } else {
            Self::Internal(error.into())
        }
    }
}

impl From<SubmitError> for AppError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::QueueFull | SubmitError::ShuttingDown | SubmitError::NotDurable => {
                Self::IntakeUnavailable(error)
            }
            SubmitError::Store(store) if store.retry_after().is_some() => {
                Self::IntakeUnavailable(SubmitError::Store(store))
            }
            SubmitError::Store(_) | SubmitError::Panicked => Self::Internal(error.into()),
        }
    }
}

/// The one mapping of a failed decision: unknown is 404, expired is 409.
impl From<ApprovalError> for AppError {
    fn from(error: ApprovalError) -> Self {
        match error {
            ApprovalError::NotFound(_) => Self::NotFound(error.to_string()),
            ApprovalError::Expired(..) | ApprovalError::RunNotWaiting { .. } => {
                Self::Conflict(error.to_string())
            }
            ApprovalError::Run(RunError::Store(store)) | ApprovalError::Store(store) => {
                store.into()
            }
            ApprovalError::Run(run) => Self::Internal(run.into()),
        }
    }
}

impl From<StartError> for AppError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::UnknownPlaybook { .. } | StartError::InvalidLabels(_) => {
                Self::Intake(IntakeError::Invalid(error.to_string()))
            }
            StartError::Run(RunError::Store(store)) => store.into(),
            StartError::Run(run) => Self::Internal(run.into()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, code = self.code(), "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
            request_id: super::request_id::current(),
        };
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            Self::TooManyRequests(seconds) => Some(*seconds),
            Self::Unavailable(store) => store.retry_after().map(|wait| wait.as_secs()),
            Self::IntakeUnavailable(SubmitError::Store(store)) => {
                store.retry_after().map(|wait| wait.as_secs())
            }
            Self::IntakeUnavailable(_) => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runbookd\""),
            );
        }
        response
    }
}
