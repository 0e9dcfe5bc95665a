//! Connection exhaustion is contained: the real binary under a 256-file limit, with a 1 s
//! header-read timeout, takes a pile of 2,000 connections that send half a request header or
//! nothing. Every one of them is closed (at once past the connection cap, or by the timeout),
//! the service never runs out of file descriptors, and `/healthz`, an alert and a one-tap
//! link approval still answer meanwhile.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::eventually;
use common::process::ServiceProcess;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

const ADMIN: &str = "connection-limits-admin-0123456789";
const SLOW_CONNECTIONS: usize = 2_000;
const OPEN_FILES: u64 = 256;
/// A connection answered with EOF sooner than this was closed at once, not held.
const HELD: Duration = Duration::from_millis(800);

/// Records what the ntfy sink is sent.
async fn ntfy_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let router = axum::Router::new().fallback(axum::routing::post(
        move |body: axum::body::Bytes| async move {
            sink.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            StatusCode::OK
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

/// This process may open as many files as its hard limit allows: the pile needs 2,000.
fn raise_own_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
    let room = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        room > SLOW_CONNECTIONS as u64 + 200,
        "this test needs an open-file limit above {SLOW_CONNECTIONS}; the hard limit is {room}"
    );
}

/// How one slow connection ended.
enum Ending {
    /// The service closed it: after `after`.
    Closed { after: Duration },
    /// Still open when the test stopped waiting.
    Open,
    /// The connection could not be made.
    NotConnected,
}

/// Connects, sends `sent` (part of a header, or nothing), and waits for the service to close
/// the connection.
async fn slow_client(address: SocketAddr, sent: &'static [u8]) -> Ending {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return Ending::NotConnected;
    };
    let opened = Instant::now();
    // A write may fail when the service has closed the connection already.
    let _ = stream.write_all(sent).await;
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    match closed {
        Ok(()) => Ending::Closed {
            after: opened.elapsed(),
        },
        Err(_) => Ending::Open,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_connections_are_cut_and_the_routes_that_matter_still_answer() {
    raise_own_open_file_limit();
    let (ntfy, received) = ntfy_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[http]\nheader_read_timeout_secs = 1\n\n\
         [notify]\npoll_interval_ms = 50\nbackoff_initial_ms = 10\nbackoff_max_ms = 50\n\n\
         [[notify.sinks]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{ntfy}\"\ntopic = \"runbookd\"\n"
    );
    let service = ServiceProcess::start_lab_with_open_files(
        dir.path(),
        "nfs-unmounted",
        ADMIN,
        &config,
        OPEN_FILES,
    )
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", service.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "the service runs under the 256-file limit: {limits}"
    );
    service.post_reference_alert(ADMIN).await;
    let approve = eventually("the approval on ntfy", Duration::from_secs(60), || async {
        received.lock().unwrap().iter().find_map(|message| {
            let title = message["title"].as_str()?;
            title
                .starts_with("Approval needed")
                .then(|| message["actions"][0]["url"].as_str().map(str::to_owned))?
        })
    })
    .await;

    let address: SocketAddr = service
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut pile = JoinSet::new();
    for i in 0..SLOW_CONNECTIONS {
        let sent: &'static [u8] = if i % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: runbookd\r\nX-Half: "
        } else {
            b""
        };
        pile.spawn(slow_client(address, sent));
    }

    // While the pile is open: a fresh connection per request, as a monitor or a phone makes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let health = eventually("/healthz during the pile", Duration::from_secs(30), || {
        let request = client.get(format!("{}/healthz", service.address)).send();
        async move { request.await.ok().map(|r| r.status()) }
    })
    .await;
    assert_eq!(health, 200);
    let alert = include_str!("fixtures/reference/alertmanager-v4.json");
    let intake = eventually("an alert during the pile", Duration::from_secs(30), || {
        let request = client
            .post(format!("{}/webhook/alertmanager", service.address))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(alert)
            .send();
        async move { request.await.ok().map(|r| r.status()) }
    })
    .await;
    assert_eq!(intake, 202);
    let decision = eventually(
        "a link approval during the pile",
        Duration::from_secs(30),
        || {
            let request = client
                .post(&approve)
                .header("accept", "application/json")
                .send();
            async move {
                let response = request.await.ok()?;
                let status = response.status();
                Some((status, response.json::<Value>().await.ok()?))
            }
        },
    )
    .await;
    assert_eq!(decision.0, 200, "{}", decision.1);
    assert_eq!(decision.1["approval"]["decided_by"], "link:phone");
    let answered_within = started.elapsed();

    let (mut at_once, mut by_timeout, mut open, mut not_connected) = (0, 0, 0, 0);
    let mut longest = Duration::ZERO;
    while let Some(ending) = pile.join_next().await {
        match ending.unwrap() {
            Ending::Closed { after } if after < HELD => at_once += 1,
            Ending::Closed { after } => {
                by_timeout += 1;
                longest = longest.max(after);
            }
            Ending::Open => open += 1,
            Ending::NotConnected => not_connected += 1,
        }
    }
    println!(
        "{SLOW_CONNECTIONS} slow connections under a {OPEN_FILES}-file limit: {at_once} closed at \
         once (past the cap), {by_timeout} held then cut by the 1 s header timeout (longest \
         {longest:?}), {open} still open after 30 s, {not_connected} not connected; /healthz, \
         an alert and a link approval answered within {answered_within:?}"
    );
    assert_eq!(open, 0, "every slow connection is closed");
    assert_eq!(not_connected, 0, "the accept queue never stalled");
    assert!(
        by_timeout > 0,
        "some slow connections were held, then cut by the header timeout"
    );
    assert!(
        longest < Duration::from_secs(10),
        "held connections were cut by the 1 s header timeout, not later: {longest:?}"
    );
    let log = service.log_text();
    assert!(
        !log.contains("cannot accept connections"),
        "the service never ran out of file descriptors: {log}"
    );
    assert!(
        log.contains("too many open connections"),
        "the cap was reached and said so"
    );
    assert!(service.terminate().await.success());
}
