//! The web page: a small server-rendered UI for the on-call human and the operator.
//!
//! | path | who |
//! |---|---|
//! | `GET /login`, `POST /login`, `GET /static/style.css` | anyone |
//! | `GET /`, `GET /backups`, `GET /incidents/{id}`, `GET /runs/{id}`, `GET /approvals/{id}`, `POST /logout` | a token that may read |
//! | `POST /approvals/{id}/approve`, `.../reject` | decide (approver, admin) |
//! | `POST /pause`, `POST /resume` | control (admin) |
//!
//! **Session.** Signing in with a token opens a server-side session (`store::sessions`): the
//! HttpOnly, SameSite=Strict, `Path=/` cookie carries only its random id, the database only the
//! id's SHA-256, the token's name and a binding to its secret. Every page request resolves the
//! cookie through that table and the [`TokenTable`], so signing out, the session's lifetime
//! (`http.session_hours`), or a token removed, re-roled or given a new secret in the config
//! ends it. The cookie is `Secure` whenever the browser reached us over https (the login form's
//! `Origin`, or `X-Forwarded-Proto: https` from a proxy); plain http is for loopback only.
//!
//! **Forms** are POSTs carrying a synchronizer token: HMAC-SHA256, under a key drawn at start-up,
//! of the digest of a cookie's value: the session id for a signed-in form, or, for the sign-in
//! form, a random nonce in its own cookie (`runbookd_login`). [`guard`] and [`login`] check it
//! (in constant time) before a handler acts, together with `Sec-Fetch-Site` and `Origin` (or
//! `Referer`) when the browser sends them. The origin may be the request's own host or, behind
//! a proxy that rewrites `Host`, one of the [`Sites`] runbookd is reached by
//! (`notify.public_url`, `http.allowed_hosts`). A restart draws a new key, so forms loaded
//! before it must be reloaded.
//!
//! **Failed sign-ins** are audited (`login.failed`, with the address, never the token) and
//! limited per client address (per /64 for IPv6): past ten a minute, 429 with `Retry-After`.
//!
//! **Pages** are rendered with maud, which escapes every value; there is no script, and the
//! Content-Security-Policy forbids any. Decisions and the kill switch go through the same store
//! calls as the REST API, with the logged-in token's name as the actor.

mod backups;
pub(crate) mod pages;
mod run_page;
mod session;
mod timeline_svg;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Extension, Form, FromRequestParts, Query, Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use ring::hmac;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::session::{FailedLogins, SessionId, random_hex};
use super::AppState;
use super::approvals::check_comment;
use super::error::AppError;
use super::links::{Peer, bucket};
use crate::auth::{Permission, Principal, Role, TokenTable};
use crate::clock::Clock;
use crate::store::approvals::Decision;
use crate::store::audit::{AuditDetail, NewAuditEvent, SignIn};
use crate::store::safety::Switch;
use crate::store::sessions::NewSession;
use crate::store::{Store, StoreError};

const SESSION_COOKIE: &str = "runbookd_session";
/// The sign-in form's CSRF nonce, until the browser signs in.
const LOGIN_COOKIE: &str = "runbookd_login";
/// Forms are small: a comment of at most 2,000 characters, percent-encoded, and a token.
const MAX_FORM_BYTES: usize = 64 * 1024;
const MAX_TOKEN_CHARS: usize = 1024;
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const STYLE: &str = include_str!("style.css");

/// What signing in and the guard need: the tokens, the sessions table, the key for CSRF
/// tokens, the sites forms may come from, and the count of failed sign-ins.
pub struct Sessions {
    tokens: Arc<TokenTable>,
    store: Store,
    clock: Arc<dyn Clock>,
    lifetime: chrono::TimeDelta,
    csrf_key: hmac::Key,
    sites: Sites,
    failed_logins: FailedLogins,
}

impl Sessions {
    fn new(state: &AppState, tokens: Arc<TokenTable>, sites: Sites, lifetime: Duration) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let csrf_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the system's random number generator works");
        Self {
            tokens,
            store: state.store.clone(),
            clock: state.clock.clone(),
            lifetime: chrono::TimeDelta::from_std(lifetime)
                .expect("the config bounds the session lifetime"),
            csrf_key,
            sites,
            failed_logins: FailedLogins::default(),
        }
    }

    /// The form token bound to this cookie value (a session id, or the sign-in nonce).
    fn csrf_token(&self, cookie: &str) -> String {
        hex::encode(hmac::sign(&self.csrf_key, &csrf_message(cookie)).as_ref())
    }

    fn csrf_valid(&self, cookie: &str, presented: &str) -> bool {
        hex::decode(presented)
            .is_ok_and(|tag| hmac::verify(&self.csrf_key, &csrf_message(cookie), &tag).is_ok())
    }

    /// Who the session `id` belongs to: a session that has not expired, of a token still
    /// configured under its name, with its role and its secret.
    async fn resolve(&self, id: &SessionId) -> Result<Option<Principal>, StoreError> {
        let Some(session) = self.store.session(&id.sha256(), self.clock.now()).await? else {
            return Ok(None);
        };
        Ok(self
            .tokens
            .named(&session.token_name)
            .filter(|token| token.role().as_str() == session.role)
            .filter(|token| {
                bool::from(
                    token
                        .session_binding(id.as_str().as_bytes())
                        .ct_eq(&session.token_binding),
                )
            })
            .map(|token| token.principal()))
    }
}

fn csrf_message(cookie: &str) -> Vec<u8> {
    let mut message = b"runbookd-ui-csrf\0".to_vec();
    message.extend_from_slice(&Sha256::digest(cookie.as_bytes()));
    message
}

/// Path parameters, refused with an HTML 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(PageError))]
struct Path<T>(T);

/// The logged-in user of a page request.
#[derive(Clone)]
pub struct Viewer {
    pub principal: Principal,
    /// The value every form of this session must send back as `csrf`.
    pub csrf: String,
}

impl Viewer {
    pub fn may(&self, permission: Permission) -> bool {
        self.principal.role.allows(permission)
    }

    fn require(&self, permission: Permission, what: &str) -> Result<(), PageError> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "You are signed in as '{}' with role '{}', which may not {what}.",
                    self.principal.name,
                    self.principal.role.as_str()
                ),
            ))
        }
    }
}

/// The UI's routes, to merge into the app's router. A sign-in lasts `lifetime`.
pub fn routes(
    state: &AppState,
    tokens: Arc<TokenTable>,
    sites: Sites,
    lifetime: Duration,
) -> Router<AppState> {
    let keys = Arc::new(Sessions::new(state, tokens, sites, lifetime));
    let signed_in = Router::new()
        .route("/", get(home))
        .route("/backups", get(backups))
        .route("/incidents/{id}", get(incident))
        .route("/runs/{id}", get(run))
        .route("/approvals/{id}", get(approval))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/logout", post(logout))
        .route_layer(from_fn_with_state(keys.clone(), guard));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/static/style.css", get(style))
        .layer(Extension(keys))
        .merge(signed_in)
        .layer(map_response(security_headers))
}

/// Resolves the session cookie to a [`Viewer`] (or sends the browser to `/login`), and checks
/// every POST's origin and CSRF token before its handler runs.
async fn guard(State(keys): State<Arc<Sessions>>, request: Request, next: Next) -> Response {
    let jar = CookieJar::from_headers(request.headers());
    let session = jar
        .get(SESSION_COOKIE)
        .and_then(|c| SessionId::from_cookie(c.value()));
    let principal = match &session {
        Some(id) => match keys.resolve(id).await {
            Ok(principal) => principal.filter(|p| p.role.allows(Permission::Read)),
            Err(error) => return PageError::from(error).into_response(),
        },
        None => None,
    };
    let (Some(session), Some(principal)) = (session, principal) else {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            // A stale cookie (expired, signed out, its token since removed) goes too. After signing in, the browser
            // comes back here: a link opened from a notification lands on its approval.
            let login = match request.uri().path_and_query().map(|p| p.as_str()) {
                Some(next) if next != "/" => format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                ),
                _ => "/login".to_owned(),
            };
            return (
                jar.remove(ui_cookie(SESSION_COOKIE, "")),
                Redirect::to(&login),
            )
                .into_response();
        }
        return PageError::new(
            StatusCode::UNAUTHORIZED,
            "You are not signed in (or your token is no longer valid). Sign in and try again.",
        )
        .into_response();
    };
    let viewer = Viewer {
        principal,
        csrf: keys.csrf_token(session.as_str()),
    };
    let request = if request.method() == Method::POST {
        match check_form_post(&keys, session.as_str(), request).await {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        }
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(viewer);
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Reads the form body (bounded), checks the origin headers and the `csrf` field, and hands
/// the request on with its body intact.
async fn check_form_post(
    keys: &Sessions,
    session: &str,
    request: Request,
) -> Result<Request, PageError> {
    same_origin(&keys.sites, request.headers(), request.uri())?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "That form is too large."))?;
    let presented = url::form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !keys.csrf_valid(session, &presented) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this site. Reload the page and try again.",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Refuses a form post that the browser says came from another site: `Sec-Fetch-Site` must
/// say same-origin, and `Origin` (or, without one, `Referer`) must name one of the [`Sites`]
/// runbookd is reached by, or the host this request was sent to.
fn same_origin(sites: &Sites, headers: &HeaderMap, uri: &Uri) -> Result<(), PageError> {
    let refused = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "Form posts from other sites are refused.",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(refused());
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
    else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .filter(|o| matches!(o.scheme(), "http" | "https"))
        .ok_or_else(refused)?;
    if sites.admit(&origin) || Sites::of_request(headers, uri).admit(&origin) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The origins a form may come from.
pub struct Sites(Vec<Site>);

impl Sites {
    /// The origin of `public_url` (scheme, host and port), and each of `allowed_hosts` (a
    /// host, with a port if it names one, over either scheme).
    pub fn new(public_url: &url::Url, allowed_hosts: &[String]) -> Self {
        let public = public_url.host_str().map(|host| Site {
            scheme: Some(public_url.scheme().to_owned()),
            host: host.to_ascii_lowercase(),
            port: public_url.port_or_known_default(),
        });
        let allowed = allowed_hosts
            .iter()
            .filter_map(|host| Site::from_authority(host, None));
        Self(public.into_iter().chain(allowed).collect())
    }

    /// Where this request says it was sent: `Host` (or, over HTTP/2, the URI's authority) and
    /// a proxy's `X-Forwarded-Host`, over the scheme of `X-Forwarded-Proto` if it says one.
    fn of_request(headers: &HeaderMap, uri: &Uri) -> Self {
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        };
        let scheme = first("x-forwarded-proto");
        let authorities = [
            first(header::HOST.as_str()),
            uri.authority().map(Authority::as_str),
            first("x-forwarded-host"),
        ];
        Self(
            authorities
                .into_iter()
                .flatten()
                .filter_map(|authority| Site::from_authority(authority, scheme))
                .collect(),
        )
    }

    fn admit(&self, origin: &url::Url) -> bool {
        self.0.iter().any(|site| site.admits(origin))
    }
}

/// One way a browser reaches runbookd: a host, and the scheme and port where they are known.
struct Site {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

impl Site {
    /// From `host[:port]`, as in `Host`.
    fn from_authority(authority: &str, scheme: Option<&str>) -> Option<Self> {
        let authority: Authority = authority.trim().parse().ok()?;
        Some(Self {
            scheme: scheme.map(str::to_ascii_lowercase),
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }

    /// Whether `origin` is this site: the same host, the same scheme if this site's is known,
    /// and the same port (a site without one is on its scheme's default port).
    fn admits(&self, origin: &url::Url) -> bool {
        let scheme = self.scheme.as_deref().unwrap_or(origin.scheme());
        let port = self.port.or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        origin
            .host_str()
            .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && origin.scheme() == scheme
            && origin.port_or_known_default() == port
    }
}

/// Whether the browser talks to us over https, so the cookie can be `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    let is = |name: HeaderName, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with(prefix))
    };
    is(header::ORIGIN, "https://") || is(HeaderName::from_static("x-forwarded-proto"), "https")
}

/// The UI's cookies: for this site's pages only, never readable by scripts, never sent with a
/// request another site starts.
fn ui_cookie(name: &'static str, value: &str) -> Cookie<'static> {
    Cookie::build((name, value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .build()
}

/// Headers on every UI response.
async fn security_headers(mut response: Response) -> Response {
    set_security_headers(response.headers_mut());
    response
}

/// No script, no framing, no sniffing, and no caching of pages that show incident data: for
/// the UI and every other page runbookd serves (the one-tap link pages).
pub(crate) fn set_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// The sign-in form, with a CSRF token bound to the nonce in its cookie (kept if the browser
/// already has one, so two open sign-in tabs both work).
async fn login_form(
    Extension(keys): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    jar: CookieJar,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    let (jar, nonce) = login_nonce(jar, &headers);
    let csrf = keys.csrf_token(&nonce);
    (jar, pages::login(None, local_path(next.as_deref()), &csrf)).into_response()
}

/// The sign-in nonce the browser holds, or a new one set in its cookie.
fn login_nonce(jar: CookieJar, headers: &HeaderMap) -> (CookieJar, String) {
    if let Some(nonce) = jar
        .get(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|nonce| SessionId::from_cookie(nonce).is_some())
    {
        return (jar, nonce);
    }
    let nonce = random_hex();
    let mut cookie = ui_cookie(LOGIN_COOKIE, &nonce);
    cookie.set_secure(over_https(headers));
    (jar.add(cookie), nonce)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    /// The sign-in form's CSRF token.
    #[serde(default)]
    csrf: String,
    /// Where to go after signing in; only a path on this site is followed.
    next: Option<String>,
}

/// `next` if it is a path on this site, and nothing that a browser could read as another
/// site (`//host`, `/\host`, a scheme) or that cannot go in a header.
fn local_path(next: Option<&str>) -> Option<&str> {
    next.filter(|next| {
        next.starts_with('/')
            && !next.starts_with("//")
            && next.len() <= 2048
            && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    })
}

/// Signs in: origin and CSRF first, then the failed-sign-in limit, then the token. A valid
/// token opens a session; every refusal of a token is audited.
async fn login(
    Extension(keys): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    uri: Uri,
    jar: CookieJar,
    peer: Peer,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&keys.sites, &headers, &uri)?;
    let expired = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This sign-in form has expired or did not come from this site. Reload the page and try again.",
        )
    };
    let nonce = jar
        .get(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .ok_or_else(expired)?;
    let Ok(Form(form)) = form else {
        return Ok((
            StatusCode::BAD_REQUEST,
            pages::login(
                Some("Paste a token to sign in."),
                None,
                &keys.csrf_token(&nonce),
            ),
        )
            .into_response());
    };
    if !keys.csrf_valid(&nonce, &form.csrf) {
        return Err(expired());
    }
    let next = local_path(form.next.as_deref());
    let csrf = keys.csrf_token(&nonce);
    let refuse =
        |status, message: &str| (status, pages::login(Some(message), next, &csrf)).into_response();
    let remote = peer.map(|Extension(ConnectInfo(address))| address.ip());
    let now = keys.clock.now();
    let client = remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), bucket);
    if let Some(wait) = keys.failed_logins.wait(client, now) {
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins from your address. Try again in {wait} seconds."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(response);
    }
    let token = form.token.trim();
    if token.is_empty() || token.chars().count() > MAX_TOKEN_CHARS {
        return Ok(refuse(StatusCode::BAD_REQUEST, "Paste a token to sign in."));
    }
    let remote = remote.map(|address| address.to_string());
    let failed = async |actor: &str, reason: &str| {
        keys.store
            .record_event(
                NewAuditEvent::of(
                    actor,
                    AuditDetail::LoginFailed(SignIn {
                        remote: remote.clone(),
                        role: None,
                        reason: Some(reason.to_owned()),
                    }),
                ),
                now,
            )
            .await
    };
    let Some(token) = keys.tokens.token_for(token) else {
        keys.failed_logins.record(client, now);
        failed("anonymous", "the token is not valid").await?;
        return Ok(refuse(StatusCode::UNAUTHORIZED, "That token is not valid."));
    };
    if !token.role().allows(Permission::Read) {
        failed(
            token.name(),
            "the token's role may not read, so it cannot sign in",
        )
        .await?;
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            match token.role() {
                Role::Ingest => {
                    "That is an ingest token: it may only post alerts and cannot sign in here. Use an approver or admin token."
                }
                _ => "That token may not read incidents, so it cannot sign in here.",
            },
        ));
    }
    let session = SessionId::generate();
    keys.store
        .open_session(NewSession {
            id_sha256: &session.sha256(),
            token_name: token.name(),
            role: token.role().as_str(),
            token_binding: &token.session_binding(session.as_str().as_bytes()),
            created_at: now,
            expires_at: now + keys.lifetime,
            remote: remote.as_deref().unwrap_or("unknown"),
        })
        .await?;
    tracing::info!(user = %token.name(), role = token.role().as_str(), "signed in to the web page");
    let mut cookie = ui_cookie(SESSION_COOKIE, session.as_str());
    cookie.set_secure(over_https(&headers));
    let jar = jar.add(cookie).remove(ui_cookie(LOGIN_COOKIE, ""));
    Ok((jar, Redirect::to(next.unwrap_or("/"))).into_response())
}

/// Signs out: the session's row goes, so its cookie is refused even if replayed.
async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<SessionId>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    state.store.end_session(&session.sha256()).await?;
    Ok((
        jar.remove(ui_cookie(SESSION_COOKIE, "")),
        Redirect::to("/login"),
    )
        .into_response())
}

async fn home(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, PageError> {
    Ok(pages::home(&state, &viewer).await?.into_response())
}

async fn backups(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, PageError> {
    Ok(backups::page(&state, &viewer).await?.into_response())
}

async fn incident(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    Ok(pages::incident(&state, &viewer, id).await?.into_response())
}

async fn run(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    Ok(run_page::page(&state, &viewer, id).await?.into_response())
}

async fn approval(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    Ok(pages::approval(&state, &viewer, id).await?.into_response())
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    comment: Option<String>,
}

async fn approve(
    state: State<AppState>,
    viewer: Extension<Viewer>,
    id: Path<i64>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Result<Response, PageError> {
    decide(state, viewer, id, form, Decision::Approve).await
}

async fn reject(
    state: State<AppState>,
    viewer: Extension<Viewer>,
    id: Path<i64>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Result<Response, PageError> {
    decide(state, viewer, id, form, Decision::Reject).await
}

/// Decides through [`crate::store::Store::decide`], as `POST /api/v1/approvals/{id}/...` does,
/// then shows the approval with its (first) decision.
async fn decide(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    form: Result<Form<DecisionForm>, FormRejection>,
    decision: Decision,
) -> Result<Response, PageError> {
    viewer.require(Permission::Decide, "decide approvals")?;
    let Form(form) =
        form.map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "That form is not valid."))?;
    // Browsers send a textarea's line breaks as CRLF.
    let comment = form
        .comment
        .map(|c| c.replace("\r\n", "\n").trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(comment) = &comment {
        check_comment(comment)?;
    }
    state
        .store
        .decide(
            id,
            decision,
            &viewer.principal.name,
            comment.as_deref(),
            state.clock.now(),
        )
        .await
        .map_err(AppError::from)?;
    state.wake_worker();
    Ok(Redirect::to(&format!("/approvals/{id}")).into_response())
}

async fn pause(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, PageError> {
    set_paused(&state, &viewer, true).await
}

async fn resume(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, PageError> {
    set_paused(&state, &viewer, false).await
}

/// The kill switch, as `POST /api/v1/pause|resume` pulls it.
async fn set_paused(
    state: &AppState,
    viewer: &Viewer,
    paused: bool,
) -> Result<Response, PageError> {
    viewer.require(Permission::Control, "pause or resume runbookd")?;
    state
        .store
        .set_switch(
            Switch::Paused,
            paused,
            &viewer.principal.name,
            state.clock.now(),
        )
        .await?;
    state.wake_worker();
    Ok(Redirect::to("/").into_response())
}

/// A failure shown as a small HTML page with its status. Server errors are logged and shown
/// without their cause.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<AppError> for PageError {
    fn from(error: AppError) -> Self {
        let status = error.status();
        if status.is_server_error() {
            tracing::error!(error = ?error, code = error.code(), "page failed");
        }
        Self::new(status, error.to_string())
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        AppError::from(error).into()
    }
}

impl From<PathRejection> for PageError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, pages::error(self.status, &self.message)).into_response()
    }
}
