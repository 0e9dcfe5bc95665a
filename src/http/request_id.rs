//! Every request's id (`x-request-id`): the client's own when it sends one that is short and
//! printable, otherwise a new UUID. It is in the request's log span, in the answer's header
//! and in every error body, so an operator can match a user's report to the log.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;

/// The header the id travels in.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id longer than this is replaced: it goes into every log line of the request.
const MAX_LEN: usize = 64;

tokio::task_local! {
    /// The id of the request this task is answering, for error bodies.
    static CURRENT: String;
}

/// Drops a client's `x-request-id` unless it is one value of 1 to 64 visible ASCII
/// characters, so the id layer makes a new one instead: no control characters, spaces or
/// megabytes reach the log.
pub fn drop_unfit(mut request: Request) -> Request {
    if !fits(request.headers()) {
        request.headers_mut().remove(&HEADER);
    }
    request
}

fn fits(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => {
            let bytes = value.as_bytes();
            !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(u8::is_ascii_graphic)
        }
        (Some(_), Some(_)) => false,
    }
}

/// The request's id as text; empty if the id layer has not run.
pub fn of(request: &Request) -> &str {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
}

/// Runs the rest of the request with its id at hand for [`current`].
pub async fn scope(request: Request, next: Next) -> Response {
    let id = of(&request).to_owned();
    CURRENT.scope(id, next.run(request)).await
}

/// The id of the request being answered, if this runs inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_one_short_printable_id_is_kept() {
        assert!(fits(&with(&[])));
        assert!(fits(&with(&[b"ticket-4711"])));
        assert!(fits(&with(&[&[b'a'; 64]])));
        assert!(!fits(&with(&[&[b'a'; 65]])));
        assert!(!fits(&with(&[b""])));
        assert!(!fits(&with(&[b"two words"])));
        assert!(!fits(&with(&[b"tab\there"])));
        assert!(!fits(&with(&["caf\u{e9}".as_bytes()])));
        assert!(!fits(&with(&[b"one", b"two"])));
    }
}
