//! DNS-rebinding protection for the agent's endpoints, `/mcp` and `POST /api/call`, in one
//! layer so both refuse alike. A page on another site can make a browser on this network send
//! requests to runbookd, under a name the attacker controls (rebinding) or from its own origin;
//! such a request names a foreign `Host` or carries its page's `Origin`, and is refused with 403
//! before the token is even looked at. Clients that are not browsers send no `Origin`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header, uri::Authority};
use axum::middleware::Next;
use axum::response::Response;

use super::super::error::AppError;

/// Where the agent's endpoints may be reached from.
#[derive(Clone)]
pub struct AgentSites {
    /// `Host` values: a name (any port) or `name:port` (that port only), names in lower case
    /// and IPv6 addresses without brackets.
    hosts: Arc<Vec<(String, Option<u16>)>>,
    /// Browser origins whose pages may call the tools.
    origins: Arc<Vec<url::Origin>>,
}

impl AgentSites {
    /// Each of `hosts` is `host[:port]`, or a bare IPv6 address such as `::1`.
    pub fn new(hosts: &[String], origins: Vec<url::Origin>) -> Self {
        let hosts = hosts
            .iter()
            .map(|host| match host.parse::<Authority>() {
                Ok(authority) => (name(&authority), authority.port_u16()),
                Err(_) => (host.trim_matches(['[', ']']).to_ascii_lowercase(), None),
            })
            .collect();
        Self {
            hosts: Arc::new(hosts),
            origins: Arc::new(origins),
        }
    }

    fn admits_host(&self, host: &Authority) -> bool {
        let (host_name, host_port) = (name(host), host.port_u16());
        self.hosts.iter().any(|(allowed, port)| {
            *allowed == host_name && port.is_none_or(|port| host_port == Some(port))
        })
    }

    fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), AppError> {
        let host = headers
            .get(header::HOST)
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<Authority>().ok())
            })
            .unwrap_or_else(|| uri.authority().cloned());
        match host {
            Some(host) if self.admits_host(&host) => {}
            Some(host) => {
                return Err(AppError::Forbidden(format!(
                    "Host '{}' is not a name this service is reached by; \
                     add it to http.allowed_hosts if it is",
                    host.as_str().escape_debug()
                )));
            }
            None => {
                return Err(AppError::Forbidden(
                    "the Host header is missing or not host[:port]".to_owned(),
                ));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = origin.to_str().unwrap_or("(not text)");
        let admitted = url::Url::parse(text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .is_some_and(|url| self.origins.contains(&url.origin()));
        if admitted {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "pages from Origin '{}' may not call the agent's tools; \
                 add it to http.allowed_origins if they should",
                text.escape_debug()
            )))
        }
    }
}

/// The host of an authority as compared: lower case, an IPv6 address without brackets.
fn name(authority: &Authority) -> String {
    authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase()
}

/// The layer: checks `Host` and `Origin`, then hands the request on.
pub async fn guard(
    State(sites): State<AgentSites>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    sites.check(request.headers(), request.uri())?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> AgentSites {
        AgentSites::new(
            &[
                "localhost".to_owned(),
                "::1".to_owned(),
                "runbookd.lan:8443".to_owned(),
            ],
            vec![
                url::Url::parse("https://runbookd.lan:8443/")
                    .unwrap()
                    .origin(),
            ],
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_named_host_on_any_port_or_a_host_with_its_port_passes() {
        let uri = Uri::from_static("/api/call");
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "[::1]:8080",
            "runbookd.lan:8443",
        ] {
            assert!(
                sites().check(&headers(&[("host", host)]), &uri).is_ok(),
                "{host}"
            );
        }
    }

    #[test]
    fn a_foreign_host_or_another_port_is_refused() {
        let uri = Uri::from_static("/api/call");
        for host in [
            "evil.example",
            "runbookd.lan:80",
            "runbookd.lan",
            "[::2]:8080",
            "not a host",
        ] {
            let refused = sites().check(&headers(&[("host", host)]), &uri);
            assert!(matches!(refused, Err(AppError::Forbidden(_))), "{host}");
        }
    }

    #[test]
    fn only_the_allowed_origins_pass() {
        let uri = Uri::from_static("/mcp");
        let with = |origin| headers(&[("host", "localhost"), ("origin", origin)]);
        assert!(
            sites()
                .check(&with("https://runbookd.lan:8443"), &uri)
                .is_ok()
        );
        for origin in [
            "https://evil.example",
            "http://runbookd.lan:8443",
            "https://runbookd.lan",
            "null",
        ] {
            let refused = sites().check(&with(origin), &uri);
            assert!(matches!(refused, Err(AppError::Forbidden(_))), "{origin}");
        }
    }
}
