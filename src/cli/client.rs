//! The HTTP client of the CLI: one base URL, one bearer token, a timeout on every request, and
//! errors that say what to do: the server's own message for a refusal, the URL for a
//! connection failure. The token is sent, never shown.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the connection alone may take: a dead host fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL or token is missing or unusable: nothing was sent.
    #[error("{0}")]
    Config(String),
    /// No answer: the service is not there, or took too long.
    #[error(
        "cannot reach {url}: {reason} (is `runbookd serve` running there? set RUNBOOKD_URL or --url)"
    )]
    Unreachable { url: String, reason: String },
    /// The service answered with a 4xx: its message says why.
    #[error("{message} ({status})")]
    Refused { status: StatusCode, message: String },
    /// The service failed (5xx) or answered something that is not the API.
    #[error("{0}")]
    Server(String),
}

impl ClientError {
    /// The process exit code: 2 for usage and config, 3 for a refusal, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => super::EXIT_USAGE,
            Self::Refused { .. } => super::EXIT_REFUSED,
            Self::Unreachable { .. } | Self::Server(_) => super::EXIT_FAILURE,
        }
    }
}

/// A client of one runbookd service.
pub struct ApiClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Checks the URL (http or https, no credentials in it) and the token (present, one line).
    /// Errors show the URL only without its userinfo: a bad port must not print a password.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let mut base = Url::parse(url).map_err(|e| {
            ClientError::Config(format!(
                "the URL '{}' is not valid ({e}); expected something like http://127.0.0.1:8080",
                without_userinfo(url)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "the URL '{}' must start with http:// or https://",
                without_userinfo(url)
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ClientError::Config(
                "the URL must not carry credentials; put the token in RUNBOOKD_TOKEN".to_owned(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
            ClientError::Config(
                "no API token: set RUNBOOKD_TOKEN (or pass --token) to a token from the service's config"
                    .to_owned(),
            )
        })?;
        if token.chars().any(char::is_control) {
            return Err(ClientError::Config(
                "the API token must be one line of text".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("runbookd-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
        })
    }

    /// The service's base URL, as requests use it.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// `GET path` (relative to the base, e.g. `api/v1/incidents`), as raw JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with an optional JSON body, as raw JSON.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.send(Method::POST, path, body).await
    }

    /// Reads raw JSON as one of the [`super::model`] views.
    pub fn parse<T: DeserializeOwned>(&self, value: &Value) -> Result<T, ClientError> {
        T::deserialize(value).map_err(|e| {
            ClientError::Server(format!(
                "runbookd at {} answered in an unexpected shape ({e}); is the CLI of the same version?",
                self.base
            ))
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Config(format!("cannot build a URL for {path}: {e}")))?;
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                ClientError::Server(format!(
                    "{url} answered {status} with a body that is not JSON; is this runbookd?"
                ))
            });
        }
        let message = json
            .as_ref()
            .and_then(|j| j["error"]["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "{url} answered {status}{}",
                    if status == StatusCode::NOT_FOUND {
                        "; is this runbookd?"
                    } else {
                        ""
                    }
                )
            });
        if status.is_client_error() {
            Err(ClientError::Refused { status, message })
        } else {
            Err(ClientError::Server(format!(
                "runbookd failed ({status}): {message}"
            )))
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        let reason = if error.is_connect() && error.is_timeout() {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        } else if error.is_timeout() {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        } else {
            // The innermost cause is the one a person can act on ("Connection refused").
            let mut source: &dyn std::error::Error = error;
            while let Some(next) = source.source() {
                source = next;
            }
            source.to_string()
        };
        ClientError::Unreachable {
            url: self.base.to_string(),
            reason,
        }
    }
}

/// `input` with everything between the scheme and the last `@` replaced by `***`, for error
/// messages about URLs that may not parse. Any `@` counts (an unparsed URL has no reliable
/// authority), so this may hide more than the userinfo, never less; without `://` the whole
/// start is treated as possible userinfo (`user:pw@host` parses as scheme `user`).
fn without_userinfo(input: &str) -> String {
    let (scheme, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), input),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_or_a_bad_url_is_a_usage_error() {
        let error = ApiClient::new("http://127.0.0.1:8080", None).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("RUNBOOKD_TOKEN"), "{error}");
        for url in ["127.0.0.1:8080", "ftp://host/", "http://user:pw@host/"] {
            let error = ApiClient::new(url, Some("t")).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{url}: {error}");
            assert!(!error.to_string().contains("pw"), "{error}");
        }
    }

    #[test]
    fn a_url_that_fails_to_parse_never_shows_its_credentials() {
        // The port fails before the credentials check could: the message must still hide them.
        let error = ApiClient::new("http://u:secret@host:99999", Some("t")).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.exit_code(), 2, "{message}");
        assert!(message.contains("is not valid"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("http://***@host:99999"), "{message}");
        for url in [
            "user:secret@host:8080",
            "ftp://user:secret@host/",
            "http://user:se/cr@et@host:99999/",
            "http://user:secret@[::1/",
        ] {
            let message = ApiClient::new(url, Some("t")).unwrap_err().to_string();
            assert!(
                !message.contains("secret")
                    && !message.contains("cr@et")
                    && !message.contains("user"),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn paths_join_under_a_base_with_a_prefix() {
        let client = ApiClient::new("https://ops.example/runbookd", Some("t")).unwrap();
        assert_eq!(client.base(), "https://ops.example/runbookd/");
        assert_eq!(
            client.base.join("api/v1/incidents").unwrap().as_str(),
            "https://ops.example/runbookd/api/v1/incidents"
        );
        assert!(!format!("{client:?}").contains("\"t\""));
    }
}
