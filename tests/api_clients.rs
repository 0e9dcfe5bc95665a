//! The PBS and PVE clients' trust and error handling, against the twin's HTTPS APIs.

use crate::common;

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

#[tokio::test]
async fn every_read_the_playbook_needs_comes_back_typed() {
    let twin = Twin::start("stale-nfs").await;
    let store = name("pbs-datastore");
    let datastores = twin.pbs.datastores().await.unwrap();
    assert_eq!(datastores[0].store, "pbs-datastore");
    let snapshots = twin
        .pbs
        .snapshots(&store, &name("vm"), &name("451"))
        .await
        .unwrap();
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].is_complete());
    let cts = twin.pve.lxc(&name("hikurangi")).await.unwrap();
    assert_eq!(
        cts.iter().map(|g| g.vmid).collect::<Vec<_>>(),
        [100, 101, 102]
    );

    // A failed backup shows in PBS's own task list with the chunk store error.
    let node = name("ruapehu");
    let vmid = runbookd::exec::command::Vmid::new(451).unwrap();
    let runbookd::exec::pve::VzdumpStart::Task(_) = twin
        .pve
        .vzdump(&node, &[vmid], &name("pbs-pihanga"))
        .await
        .unwrap()
    else {
        panic!("a task")
    };
    let tasks = twin.pbs.backup_tasks(&store).await.unwrap();
    assert_eq!(tasks[0].worker_id.as_deref(), Some("pbs-datastore:vm/451"));
    assert!(
        tasks[0].status.as_deref().unwrap().contains("(os error 2)"),
        "{tasks:?}"
    );
}

#[tokio::test]
async fn only_what_cannot_have_run_is_retryable() {
    let twin = Twin::start("pbs-down").await;
    let refused = twin.pbs.version().await.unwrap_err();
    assert!(
        refused.is_retryable() && !refused.may_have_run(),
        "a refused connection sent nothing: {refused:?}"
    );

    let twin = Twin::start("host-unreachable").await;
    let slow = |base: ApiEndpoint| ApiEndpoint {
        timeout: std::time::Duration::from_millis(500),
        ..base
    };
    let read = PveClient::new(&slow(twin.lab.pve_endpoint("hikurangi")))
        .unwrap()
        .backup_jobs()
        .await
        .unwrap_err();
    assert!(
        read.is_retryable() && !read.may_have_run(),
        "a timed-out read may be repeated: {read:?}"
    );
    let write = PveClient::new(&slow(twin.lab.pve_endpoint("hikurangi")))
        .unwrap()
        .set_storage_fingerprint(
            &name("pbs-pihanga"),
            &CertFingerprint::from_digest(&[1; 32]),
        )
        .await
        .unwrap_err();
    assert!(
        !write.is_retryable() && write.may_have_run(),
        "a timed-out write may have happened: {write:?}"
    );
}
