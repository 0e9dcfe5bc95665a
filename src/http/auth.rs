//! Bearer-token authentication and role checks, as a layer on each group of routes.
//!
//! A route group declares the [`Permission`] it needs; this layer resolves the caller to a
//! [`Principal`] (401 when that fails), checks the role (403), and hands the principal to the
//! handler as a request extension, so handlers cannot forget to authenticate.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::AppError;
use crate::auth::{Permission, Principal, TokenTable};

#[derive(Clone)]
pub struct Gate {
    pub tokens: Arc<TokenTable>,
    pub permission: Permission,
    /// Only honoured for [`Permission::Ingest`].
    pub allow_anonymous_ingest: bool,
}

pub async fn authorize(
    State(gate): State<Gate>,
    mut request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let principal = match bearer_token(request.headers())? {
        Some(token) => gate
            .tokens
            .authenticate(token)
            .ok_or(AppError::Unauthorized("the bearer token is not valid"))?,
        None if gate.allow_anonymous_ingest && gate.permission == Permission::Ingest => {
            Principal::anonymous_ingest()
        }
        None => {
            return Err(AppError::Unauthorized(
                "authentication required: send Authorization: Bearer TOKEN",
            ));
        }
    };
    if !principal.role.allows(gate.permission) {
        return Err(AppError::Forbidden(format!(
            "token '{}' has role '{}', which may not {}",
            principal.name,
            principal.role.as_str(),
            match gate.permission {
                Permission::Ingest => "post alerts",
                Permission::Read => "read incidents",
                Permission::Operate => "start or cancel runs",
                Permission::Decide => "decide approvals",
                Permission::Control => {
                    "pause or resume runbookd, reset a circuit breaker or switch dry-run"
                }
            }
        )));
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(AppError::Unauthorized(
            "the Authorization header must be 'Bearer TOKEN'",
        )),
    }
}
