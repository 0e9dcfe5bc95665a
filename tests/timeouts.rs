//! A request that does not finish within `http.request_timeout_secs` gets a JSON 503 (which
//! Alertmanager retries) and stores nothing: a stalled client cannot hold a worker forever.

use crate::common;

use std::time::Duration;

use common::{INGEST_TOKEN, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_stalled_request_body_gets_503() {
    let app = TestApp::spawn_with(|config| config.http.request_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // Promise 100 bytes of body, send 14, then stall.
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: runbookd\r\nAuthorization: Bearer {INGEST_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"alert_name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&response).contains("\"code\":\"timeout\"") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed without an answer: {}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    assert!(answered.is_ok(), "no answer to a stalled request: {text}");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert_eq!(app.count("deliveries").await, 0);
}
