//! The PBS and PVE clients' trust and error handling, against the twin's HTTPS APIs.

mod common;

use common::twin::{Twin, name};
use runbookd::exec::command::CertFingerprint;
use runbookd::exec::http::{ApiEndpoint, ApiError, TlsTrust};
use runbookd::exec::pbs::{PbsApi, PbsClient};
use runbookd::exec::pve::{PveApi, PveClient};

#[tokio::test]
async fn a_certificate_that_does_not_match_the_pin_is_refused() {
    let twin = Twin::start("healthy").await;
    let wrong = ApiEndpoint {
        trust: TlsTrust::Fingerprint(CertFingerprint::from_digest(&[7; 32])),
        ..twin.lab.pbs_endpoint()
    };
    let error = PbsClient::new(&wrong).unwrap().version().await.unwrap_err();
    assert!(
        matches!(error, ApiError::CertificateRejected { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("does not match the pinned"),
        "{error}"
    );
    assert!(!error.is_retryable());
    // The PVE certificate is not PBS's either.
    let swapped = ApiEndpoint {
        trust: TlsTrust::Fingerprint(twin.lab.pve_fingerprint.clone()),
        ..twin.lab.pbs_endpoint()
    };
    assert!(matches!(
        PbsClient::new(&swapped).unwrap().version().await,
        Err(ApiError::CertificateRejected { .. })
    ));
}

#[tokio::test]
async fn a_ca_file_is_trusted_instead_of_a_pin() {
    let twin = Twin::start("healthy").await;
    twin.lab.write_files().unwrap();
    let by_ca = ApiEndpoint {
        trust: TlsTrust::CaFile(twin.lab.dir.join("pbs.pem")),
        ..twin.lab.pbs_endpoint()
    };
    assert_eq!(
        PbsClient::new(&by_ca)
            .unwrap()
            .version()
            .await
            .unwrap()
            .version,
        "3.2"
    );
    let other_ca = ApiEndpoint {
        trust: TlsTrust::CaFile(twin.lab.dir.join("pve.pem")),
        ..twin.lab.pbs_endpoint()
    };
    assert!(matches!(
        PbsClient::new(&other_ca).unwrap().version().await,
        Err(ApiError::CertificateRejected { .. })
    ));
}

#[tokio::test]
async fn a_wrong_token_gets_the_servers_own_words() {
    let twin = Twin::start("healthy").await;
    let pbs = PbsClient::new(&ApiEndpoint {
        token_secret: "wrong-secret".into(),
        ..twin.lab.pbs_endpoint()
    })
    .unwrap();
    match pbs.version().await {
        Err(ApiError::Status {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "authentication failed - invalid token"),
        other => panic!("{other:?}"),
    }
    let pve = PveClient::new(&ApiEndpoint {
        token_secret: "wrong-secret".into(),
        ..twin.lab.pve_endpoint("ruapehu")
    })
    .unwrap();
    match pve.backup_jobs().await {
        Err(ApiError::Status {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "invalid token value!"),
        other => panic!("{other:?}"),
    }
    // The token never leaves the client in an error.
    let error = pbs.version().await.unwrap_err().to_string();
    assert!(
        !error.contains("wrong-secret") && !error.contains(&twin.lab.api_token.secret),
        "{error}"
    );
}

#[tokio::test]
async fn api_errors_carry_the_message_and_plain_http_is_refused() {
    let twin = Twin::start("healthy").await;
    match twin.pve.storage(&name("nfs-elsewhere")).await {
        Err(ApiError::Status {
            status: 500,
            message,
            ..
        }) => assert_eq!(message, "storage 'nfs-elsewhere' does not exist"),
        other => panic!("{other:?}"),
    }
    match twin.pbs.groups(&name("other-store")).await {
        Err(ApiError::Status {
            status: 400,
            message,
            ..
        }) => assert_eq!(message, "datastore 'other-store' does not exist"),
        other => panic!("{other:?}"),
    }
    let plain = ApiEndpoint {
        base_url: twin.lab.pbs_endpoint().base_url.replace("https", "http"),
        ..twin.lab.pbs_endpoint()
    };
    assert!(matches!(
        PbsClient::new(&plain),
        Err(ApiError::Config { .. })
    ));
    assert!(matches!(
        twin.pve
            .task_status(&name("ruapehu"), "UPID:x/../../etc")
            .await,
        Err(ApiError::Config { .. })
    ));
}
