//! One-tap links from notifications: `GET /links/{token}` shows what the link would do and
//! changes nothing (link previewers and prefetchers GET whatever they see); `POST
//! /links/{token}` makes the decision, once, as `link:<sink>`. No bearer token: the signed link
//! is the credential (see [`crate::notify::links`]).
//!
//! | refusal | status | code |
//! |---|---|---|
//! | not signed by this runbookd (tampered, truncated, decision swapped) | 403 | `forbidden` |
//! | from a sink that no longer carries links (removed, or `links = false`) | 403 | `forbidden` |
//! | past its expiry | 410 | `gone` |
//! | used before (a replay) | 410 | `gone` |
//!
//! Every refusal, GET or POST, is audited (`link.refused`) with the reason, the approval when
//! the signature held, and the requester's address; never the token. So that garbage links
//! cannot flood the audit trail, refusals are charged to the requester's address (an IPv6
//! one by its /64), `notify.link_requests_per_minute` of them ([`LinkLimiter`]); past that
//! the answer is 429 with `Retry-After`, counted in the metric
//! `runbookd_link_requests_limited_total` and not audited. Only refusals are charged, after
//! the signature (an HMAC, no I/O) is checked: a genuine, unused, unexpired link is never
//! throttled, however much garbage arrives from the same address or proxy. A link whose approval was
//! decided by someone else reports that first decision (`decided_now: false`), as the REST
//! route does. The answer is JSON when the request accepts `application/json`, else HTML.
//!
//! A browser's POST that decides is answered 303 See Other to the link's own `GET`, which
//! then shows the decision (the approval decided by this link's sink, as this link says), not
//! a refusal: a reload shows the page again instead of re-POSTing a spent link, and viewing
//! the outcome is not audited.
//!
//! The link is marked used and the decision made in one transaction on the single writer: of
//! two simultaneous uses exactly one decides, and a failed decision leaves the link unspent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::Json;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use maud::{Markup, html};
use serde_json::json;

use super::AppState;
use super::error::AppError;
use super::extract::ApiPath;
use super::ui::pages::{approval_status_str, at, layout};
use super::ui::set_security_headers;
use crate::notify::links::{LinkClaims, LinkRejected};
use crate::store::approvals::{Approval, ApprovalStatus, Decided, Decision};
use crate::store::audit::{AuditDetail, LinkRefused, NewAuditEvent};

/// The caller's address, when the server knows it.
pub(super) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// Addresses tracked before the limiter forgets those that are back to a full quota.
const TRACKED_ADDRESSES: usize = 10_000;

/// Bounds refused `/links` requests per client address (a burst of the per-minute quota,
/// then a steady refill), so an address sending garbage links cannot fill the audit trail.
pub struct LinkLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl LinkLimiter {
    pub fn per_minute(requests: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(requests)),
        }
    }

    /// Takes one refusal from `peer`'s quota, or says how many seconds to wait.
    fn check(&self, peer: Peer) -> Result<(), u64> {
        if self.limiter.len() > TRACKED_ADDRESSES {
            self.limiter.retain_recent();
        }
        let address = peer.map_or(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            |Extension(ConnectInfo(a))| bucket(a.ip()),
        );
        self.limiter.check_key(&address).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

/// The quota an address is charged to: an IPv4 address (also when IPv4-mapped), or an IPv6
/// address's /64, as one host is usually given a whole /64 and could otherwise take a fresh
/// quota for every request.
pub(super) fn bucket(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

#[utoipa::path(get, path = "/links/{token}", tag = "notifications", operation_id = "show_link",
    params(("token" = String, Path, description = "The signed link from a notification")),
    responses(
        (status = 200, content_type = "text/html", description = "The run, step, exact command and risk, with a button that POSTs the link; changes nothing"),
        (status = 403, description = "The link was altered"),
        (status = 410, description = "The link expired or was used"),
        (status = 429, description = "Too many refused requests from this address; not audited"),
    ),
    description = "Open: the signed, single-use, expiring link is the credential. Every refusal is audited as `link.refused`.")]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    let json = wants_json(&headers);
    let claims = match check(&state, &token, Method::GET, peer).await {
        Ok(claims) => claims,
        Err(error) => return answer_error(error, json),
    };
    let approval = match load(&state, claims.approval_id).await {
        Ok(approval) => approval,
        Err(error) => return answer_error(error, json),
    };
    match state.store.link_used(&claims.nonce).await {
        Ok(false) => {}
        Ok(true) if decided_by(&approval, &claims) => {}
        Ok(true) => {
            let refused = refuse(&state, Refusal::Used, Some(&claims), Method::GET, peer).await;
            return answer_error(refused, json);
        }
        Err(error) => return answer_error(error.into(), json),
    }
    if json {
        return private(
            Json(json!({"decision": claims.decision, "expires_at": claims.expires_at, "approval": approval}))
                .into_response(),
        );
    }
    let verb = verb(claims.decision);
    let body = html! {
        (describe(&approval))
        @if approval.status == ApprovalStatus::Pending {
            form method="post" { button type="submit" { (verb) " this step" } }
            p { "This link works once, until " (at(claims.expires_at)) "." }
        } @else {
            (decided_text(&approval))
        }
    };
    let title = if approval.status == ApprovalStatus::Pending {
        format!("{verb} step {}?", approval.step)
    } else {
        format!("Decided: {}", approval.step)
    };
    page(StatusCode::OK, &title, body)
}

/// Whether `approval` was decided the way this used link says, by its sink: then the link's
/// page shows that decision instead of refusing the spent link.
fn decided_by(approval: &Approval, claims: &LinkClaims) -> bool {
    let status = match claims.decision {
        Decision::Approve => ApprovalStatus::Approved,
        Decision::Reject => ApprovalStatus::Rejected,
    };
    approval.status == status
        && approval.decided_by.as_deref() == Some(format!("link:{}", claims.sink).as_str())
}

#[utoipa::path(post, path = "/links/{token}", tag = "notifications", operation_id = "decide_link",
    params(("token" = String, Path, description = "The signed link from a notification")),
    responses(
        (status = 200, description = "Decided as `link:<sink>` (JSON), or the first decision when it was decided before (JSON or a page)"),
        (status = 303, description = "Decided as `link:<sink>`, for a browser: see the link's GET, which shows the decision"),
        (status = 403, description = "The link was altered"),
        (status = 410, description = "The link expired or was used"),
        (status = 429, description = "Too many refused requests from this address; not audited"),
    ),
    description = "Open: the signed, single-use, expiring link is the credential. Every refusal is audited as `link.refused`.")]
pub async fn decide(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    let json = wants_json(&headers);
    match use_link(&state, &token, peer).await {
        Ok((decided_now, approval)) if json => {
            private(Json(json!({"decided_now": decided_now, "approval": approval})).into_response())
        }
        // Relative to this URL (`/links/{token}` under any prefix of the public URL): the
        // same link, to GET.
        Ok((true, _)) => private(Redirect::to(&token).into_response()),
        Ok((false, approval)) => {
            let body = html! { (describe(&approval)) (decided_text(&approval)) };
            page(
                StatusCode::OK,
                &format!("Already decided: {}", approval.step),
                body,
            )
        }
        Err(error) => answer_error(error, json),
    }
}

async fn use_link(state: &AppState, token: &str, peer: Peer) -> Result<(bool, Approval), AppError> {
    let claims = check(state, token, Method::POST, peer).await?;
    let Some(decided) = state
        .store
        .decide_by_link(
            &claims.nonce,
            claims.approval_id,
            claims.decision,
            &claims.sink,
            state.clock.now(),
        )
        .await?
    else {
        return Err(refuse(state, Refusal::Used, Some(&claims), Method::POST, peer).await);
    };
    state.wake_worker();
    let approval = load(state, claims.approval_id).await?;
    Ok((matches!(decided, Decided::Now(_)), approval))
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    BadSignature,
    /// Signed, but for longer than the link lifetime: not made under this runbookd's settings.
    OverlongExpiry,
    /// Signed for a sink that no longer carries links: revoked with the sink.
    UnknownSink,
    Expired,
    Used,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::OverlongExpiry => "overlong_expiry",
            Self::UnknownSink => "unknown_sink",
            Self::Expired => "expired",
            Self::Used => "used",
        }
    }

    fn error(self) -> AppError {
        match self {
            Self::BadSignature => AppError::Forbidden(
                "this link is not valid: it was changed or cut short; use the link exactly as it was sent".into(),
            ),
            Self::OverlongExpiry => AppError::Forbidden(
                "this link is refused: its expiry is further off than runbookd's link lifetime (notify.link_ttl_secs) allows, so no setting of this runbookd made it; decide in runbookd itself (web page, CLI or API)".into(),
            ),
            Self::UnknownSink => AppError::Forbidden(
                "this link was revoked: the notification that carried it no longer sends links; decide in runbookd itself (web page, CLI or API)".into(),
            ),
            Self::Expired => AppError::Gone(
                "this link has expired; decide in runbookd itself (web page, CLI or API)".into(),
            ),
            Self::Used => AppError::Gone("this link was used already; it works once".into()),
        }
    }
}

/// The link's claims if it is signed, from a sink that carries links, and unexpired; whether
/// it was used is for the caller to see. Refusals are audited.
async fn check(
    state: &AppState,
    token: &str,
    method: Method,
    peer: Peer,
) -> Result<LinkClaims, AppError> {
    let claims = match state.links.verify(token) {
        Ok(claims) => claims,
        Err(LinkRejected::BadSignature) => {
            return Err(refuse(state, Refusal::BadSignature, None, method, peer).await);
        }
        Err(LinkRejected::OverlongExpiry) => {
            return Err(refuse(state, Refusal::OverlongExpiry, None, method, peer).await);
        }
    };
    if !state.link_sinks.contains(&claims.sink) {
        return Err(refuse(state, Refusal::UnknownSink, Some(&claims), method, peer).await);
    }
    if claims.expires_at <= state.clock.now() {
        return Err(refuse(state, Refusal::Expired, Some(&claims), method, peer).await);
    }
    Ok(claims)
}

/// Audits a refusal and returns its error, or a 429 (not audited) when `peer` is past its
/// quota of refusals. The audit holds the approval only when the signature proved the claims
/// genuine, and never the token.
async fn refuse(
    state: &AppState,
    refusal: Refusal,
    claims: Option<&LinkClaims>,
    method: Method,
    peer: Peer,
) -> AppError {
    if let Err(seconds) = state.link_limiter.check(peer) {
        metrics::counter!("runbookd_link_requests_limited_total").increment(1);
        return AppError::TooManyRequests(seconds);
    }
    let remote = peer.map(|Extension(ConnectInfo(address))| address.ip().to_string());
    let run_id = match claims {
        Some(claims) => state
            .store
            .approval(claims.approval_id)
            .await
            .ok()
            .flatten()
            .map(|a| a.run_id),
        None => None,
    };
    let detail = AuditDetail::LinkRefused(LinkRefused {
        reason: Some(refusal.as_str().to_owned()),
        method: Some(method.as_str().to_owned()),
        remote,
        approval_id: claims.map(|c| c.approval_id),
        decision: claims.map(|c| c.decision),
        sink: claims.map(|c| c.sink.clone()),
    });
    let actor = claims.map_or_else(|| "link".to_owned(), |c| format!("link:{}", c.sink));
    if let Err(error) = state
        .store
        .record_event(
            NewAuditEvent {
                run_id,
                ..NewAuditEvent::of(&actor, detail)
            },
            state.clock.now(),
        )
        .await
    {
        return error.into();
    }
    refusal.error()
}

async fn load(state: &AppState, id: i64) -> Result<Approval, AppError> {
    state
        .store
        .approval(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("there is no approval {id}")))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"))
}

/// The error as JSON, or as a page with the same status (and `Retry-After` on a 429).
fn answer_error(error: AppError, json: bool) -> Response {
    if json {
        return private(error.into_response());
    }
    let status = error.status();
    if status.is_server_error() {
        tracing::error!(?error, "a link request failed");
        return page(
            status,
            "Something went wrong",
            html! { p { "The cause is in runbookd's log." } },
        );
    }
    let mut response = page(
        status,
        "This link cannot be used",
        html! { p { (error.to_string()) } },
    );
    if let AppError::TooManyRequests(seconds) = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn describe(approval: &Approval) -> Markup {
    html! {
        dl {
            dt { "Run" } dd { (approval.run_id) }
            dt { "Step" } dd { (approval.step) }
            dt { "Command" } dd { pre { (approval.command) } }
            dt { "Risk" } dd { (approval.risk) }
            dt { "Approval expires" } dd { (at(approval.expires_at)) }
            dt { "Status" } dd { (approval_status_str(approval.status)) }
        }
    }
}

fn decided_text(approval: &Approval) -> Markup {
    html! {
        p {
            (approval_status_str(approval.status)) " by "
            (approval.decided_by.as_deref().unwrap_or("nobody")) "."
        }
    }
}

fn verb(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => "Approve",
        Decision::Reject => "Reject",
    }
}

/// A page in the web page's layout (maud escapes every value): no script, readable on a
/// phone.
fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let html = layout(title, None, html! { h1 { (title) } (body) });
    private((status, html).into_response())
}

/// The web page's security headers (no script, no framing, no sniffing, no caching), and as
/// the URL holds a credential, no Referer and no indexing either.
fn private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    set_security_headers(headers);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_charged_by_their_64_and_ipv4_ones_alone() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1")),
            bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
        );
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(bucket(ip("192.0.2.7")), bucket(ip("192.0.2.8")));
        assert_eq!(
            bucket(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7"),
            "IPv4-mapped"
        );
    }
}
