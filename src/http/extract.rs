//! Extractors whose rejections are [`AppError`]s, so every refusal has the same JSON shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};

use super::AppState;
use super::error::AppError;

/// A query string, refused with a JSON 400 that names the bad parameter.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters, refused with a JSON 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

/// A request body declared as JSON and within the size limit, not yet parsed: intake parses
/// it itself so that it can sniff the format and keep the raw text.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AppError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
        match content_type {
            Some(ct) if is_json(&ct) => {}
            Some(ct) => {
                return Err(AppError::UnsupportedMediaType(format!(
                    "Content-Type '{}' is not JSON; send Content-Type: application/json",
                    ct.escape_debug()
                )));
            }
            None => {
                return Err(AppError::UnsupportedMediaType(
                    "the Content-Type header is missing; send Content-Type: application/json"
                        .to_owned(),
                ));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge(state.max_body_bytes)
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            })?;
        Ok(Self(bytes))
    }
}

/// `application/json` or any `application/*+json`, with optional parameters such as charset.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.runbookd+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
