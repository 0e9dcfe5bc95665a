//! What the PBS and PVE clients share: TLS trust (a pinned SHA-256 certificate fingerprint, or
//! a CA file), timeouts on every request, the token header, answers read up to a size cap, and
//! API errors mapped to typed errors that carry the server's own message. Every answer and
//! error leaves here redacted: this is the PBS/PVE boundary of the one [`Redactor`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::command::CertFingerprint;
use super::output::Redactor;

/// The most of a PBS/PVE answer runbookd reads: the largest real answer (a task or group list)
/// is far smaller; past this the answer is refused rather than held in memory.
pub const MAX_API_BODY: usize = 4 * 1024 * 1024;

/// How a client decides to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// The certificate's SHA-256 fingerprint must be this one (self-signed PBS/PVE).
    Fingerprint(CertFingerprint),
    /// The certificate must chain to the CA in this PEM file.
    CaFile(PathBuf),
}

/// Where an API is and how to reach it.
#[derive(Clone)]
pub struct ApiEndpoint {
    /// `https://host:port`, without `/api2/json`.
    pub base_url: String,
    pub trust: TlsTrust,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    pub token_secret: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ApiEndpoint {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiEndpoint")
            .field("base_url", &self.base_url)
            .field("trust", &self.trust)
            .field("token_id", &self.token_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {service} API configuration: {detail}")]
    Config {
        service: &'static str,
        detail: String,
    },
    #[error("{service} at {url} presented a certificate that is not trusted: {detail}")]
    CertificateRejected {
        service: &'static str,
        url: String,
        detail: String,
    },
    #[error("{service} at {url} did not answer within {after:?}")]
    Timeout {
        service: &'static str,
        url: String,
        after: Duration,
        /// A read (GET), which may be repeated.
        idempotent: bool,
    },
    #[error("cannot connect to {service} at {url}: {detail}")]
    Connect {
        service: &'static str,
        url: String,
        detail: String,
    },
    #[error("{service} answered {status} for {path}: {message}")]
    Status {
        service: &'static str,
        path: String,
        status: u16,
        message: String,
        /// A read (GET), which may be repeated.
        idempotent: bool,
    },
    #[error("{service} sent more than {limit} bytes for {path}; runbookd reads at most that")]
    TooLarge {
        service: &'static str,
        path: String,
        limit: usize,
    },
    #[error("{service} sent a response runbookd cannot read for {path}: {detail}")]
    Decode {
        service: &'static str,
        path: String,
        detail: String,
    },
}

impl ApiError {
    /// Safe to try again later. A connection that never opened sent nothing. A timeout or a
    /// gateway error is worth a retry only for a read: a POST or PUT may have been carried out
    /// (PVE may have queued the vzdump). PVE answers 500 for errors that do not pass ("does not
    /// exist"), so plain 500 is not retryable either.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Timeout { idempotent, .. } => *idempotent,
            Self::Status {
                status, idempotent, ..
            } => *idempotent && matches!(status, 502..=504),
            _ => false,
        }
    }

    /// The request may have been carried out although no answer says so.
    pub fn may_have_run(&self) -> bool {
        match self {
            Self::Timeout { idempotent, .. } => !idempotent,
            Self::Status {
                status, idempotent, ..
            } => !idempotent && *status >= 500,
            _ => false,
        }
    }
}

/// Which dialect an API speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `Authorization: PBSAPIToken=ID:SECRET`; errors are a plain string body.
    Pbs,
    /// `Authorization: PVEAPIToken=ID=SECRET`; errors are `{"message": ...}`.
    Pve,
}

impl Dialect {
    fn service(self) -> &'static str {
        match self {
            Self::Pbs => "PBS",
            Self::Pve => "PVE",
        }
    }
}

/// An HTTP client for one API endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    dialect: Dialect,
    base_url: String,
    auth: HeaderValue,
    http: reqwest::Client,
    timeout: Duration,
    redactor: Redactor,
}

impl ApiClient {
    /// `redactor` cleans every answer and error; it learns the endpoint's own token secret.
    pub fn new(
        dialect: Dialect,
        endpoint: &ApiEndpoint,
        redactor: Redactor,
    ) -> Result<Self, ApiError> {
        let service = dialect.service();
        let config_error = |detail: String| ApiError::Config { service, detail };
        if !endpoint.base_url.starts_with("https://") {
            return Err(config_error(format!(
                "'{}' must be an https:// URL",
                endpoint.base_url
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(e.to_string()))?;
        let tls = match &endpoint.trust {
            TlsTrust::Fingerprint(fingerprint) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    fingerprint: fingerprint.clone(),
                    provider,
                }))
                .with_no_client_auth(),
            TlsTrust::CaFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile_certs(&pem) {
                    roots
                        .add(cert)
                        .map_err(|e| config_error(format!("CA file {}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(config_error(format!(
                        "CA file {} holds no certificate",
                        path.display()
                    )));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config_error(e.to_string()))?;
        let separator = match dialect {
            Dialect::Pbs => ':',
            Dialect::Pve => '=',
        };
        let scheme = match dialect {
            Dialect::Pbs => "PBSAPIToken",
            Dialect::Pve => "PVEAPIToken",
        };
        let mut auth = HeaderValue::from_str(&format!(
            "{scheme}={}{separator}{}",
            endpoint.token_id, endpoint.token_secret
        ))
        .map_err(|_| config_error("the token id or secret is not valid header text".into()))?;
        auth.set_sensitive(true);
        Ok(Self {
            dialect,
            base_url: endpoint.base_url.trim_end_matches('/').to_owned(),
            auth,
            http,
            timeout: endpoint.timeout,
            redactor: redactor.with_secrets([endpoint.token_secret.clone()]),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.base_url)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST with a form body, as the Proxmox APIs take parameters.
    pub async fn post_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.send(reqwest::Method::POST, path, Some(form)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn put_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.send(reqwest::Method::PUT, path, Some(form)).await
    }

    /// One request, its answer read up to [`MAX_API_BODY`], decoded and redacted; any error
    /// redacted too.
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<&[(&str, String)]>,
    ) -> Result<T, ApiError> {
        let service = self.dialect.service();
        let url = self.url(path);
        let idempotent = method == reqwest::Method::GET;
        let mut request = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(form) = form {
            request = request.form(form);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, idempotent))?;
        let status = response.status();
        let too_large = || ApiError::TooLarge {
            service,
            path: path.to_owned(),
            limit: MAX_API_BODY,
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_API_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, idempotent))?
        {
            if body.len() + chunk.len() > MAX_API_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                service,
                path: path.to_owned(),
                status: status.as_u16(),
                message: self.redactor.redact(&self.error_message(&body)),
                idempotent,
            });
        }
        #[derive(serde::Deserialize)]
        struct Envelope<T> {
            data: T,
        }
        let decode_error = |e: serde_json::Error| ApiError::Decode {
            service,
            path: path.to_owned(),
            detail: self.redactor.redact(&e.to_string()),
        };
        let mut answer: serde_json::Value = serde_json::from_slice(&body).map_err(decode_error)?;
        self.redactor.redact_json(&mut answer);
        serde_json::from_value::<Envelope<T>>(answer)
            .map(|e| e.data)
            .map_err(decode_error)
    }

    /// The server's own words: PBS sends the error as the body; PVE as `message`, with
    /// per-parameter `errors`.
    fn error_message(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        if self.dialect == Dialect::Pve
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        {
            let mut parts = Vec::new();
            if let Some(message) = value["message"].as_str() {
                parts.push(message.trim().to_owned());
            }
            if let Some(errors) = value["errors"].as_object() {
                for (param, error) in errors {
                    parts.push(format!(
                        "{param}: {}",
                        error.as_str().unwrap_or_default().trim()
                    ));
                }
            }
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        let trimmed = text.trim();
        // PBS sometimes sends the string JSON-quoted.
        serde_json::from_str::<String>(trimmed).unwrap_or_else(|_| trimmed.to_owned())
    }

    fn transport_error(&self, error: &reqwest::Error, idempotent: bool) -> ApiError {
        let service = self.dialect.service();
        let url = self.base_url.clone();
        let detail = self.redactor.redact(&error_chain(error));
        if error.is_timeout() {
            ApiError::Timeout {
                service,
                url,
                after: self.timeout,
                idempotent,
            }
        } else if detail.contains("certificate")
            || detail.contains("fingerprint")
            || detail.contains("UnknownIssuer")
        {
            ApiError::CertificateRejected {
                service,
                url,
                detail,
            }
        } else {
            ApiError::Connect {
                service,
                url,
                detail,
            }
        }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// Certificates from a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Trusts exactly one certificate, by SHA-256 fingerprint. Signatures are still verified, so a
/// server must hold the certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::from_digest(&Sha256::digest(end_entity.as_ref()).into());
        if presented == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned {}",
                presented.as_str(),
                self.fingerprint.as_str()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
