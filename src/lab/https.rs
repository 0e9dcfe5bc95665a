//! HTTPS for the twin's APIs: a self-signed certificate per API, and an accept loop that can
//! refuse (service down: the connection closes) or stall (host unreachable: it never answers)
//! according to the world.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::exec::command::CertFingerprint;

const STALL: Duration = Duration::from_secs(120);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` and 127.0.0.1.
pub struct SelfSigned {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    key_der: Vec<u8>,
}

impl SelfSigned {
    pub fn generate() -> anyhow::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("cannot generate a self-signed certificate")?;
        Ok(Self {
            cert_der: certified.cert.der().clone(),
            cert_pem: certified.cert.pem(),
            key_der: certified.signing_key.serialize_der(),
        })
    }

    /// SHA-256 of the DER certificate, as PBS and PVE show it.
    pub fn fingerprint(&self) -> CertFingerprint {
        CertFingerprint::from_digest(&Sha256::digest(self.cert_der.as_ref()).into())
    }

    fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// What to do with a new connection.
pub enum Admission {
    Serve,
    /// Close it at once, as a host with the service down does.
    Refuse,
    /// Accept and never answer, as an unreachable host looks.
    Stall,
}

/// Serves `router` over TLS on `listener`; `admit` decides per connection.
pub fn serve(
    listener: TcpListener,
    cert: &SelfSigned,
    router: axum::Router,
    admit: impl Fn() -> Admission + Send + Sync + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let acceptor = cert.acceptor()?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            match admit() {
                Admission::Refuse => continue,
                Admission::Stall => {
                    tokio::spawn(async move {
                        tokio::time::sleep(STALL).await;
                        drop(stream);
                    });
                    continue;
                }
                Admission::Serve => {}
            }
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    }))
}

/// Binds a loopback port.
pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
