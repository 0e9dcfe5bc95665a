//! DNS-rebinding protection on the agent's endpoints: `/mcp` and `POST /api/call` refuse a
//! `Host` runbookd is not reached by and a browser `Origin` other than `public_url`'s and
//! `http.allowed_origins`, alike, before any tool runs; the configured ones pass.

use crate::common;

use common::{AGENT_TOKEN, TestApp};
use serde_json::Value;

const LIST_INCIDENTS: &str = r#"{"tool": "list_incidents", "arguments": {}}"#;
const MCP_TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

/// Posts to each endpoint as the agent with `headers`; the status and JSON body of each.
async fn both(app: &TestApp, headers: &[(&str, &str)]) -> [(u16, Value); 2] {
    let mut answers = Vec::new();
    for (path, body) in [("/api/call", LIST_INCIDENTS), ("/mcp", MCP_TOOLS_LIST)] {
        let mut request = app
            .client
            .post(app.url(path))
            .bearer_auth(AGENT_TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        answers.push((status, response.json().await.unwrap()));
    }
    answers.try_into().unwrap()
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_both_endpoints() {
    let app = TestApp::spawn().await;
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        for (status, body) in both(&app, &[("host", host)]).await {
            assert_eq!(status, 403, "Host {host}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(host) && message.contains("http.allowed_hosts"),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_both_endpoints() {
    let app = TestApp::spawn().await;
    // The service's own address over another scheme is another origin too.
    let own_over_https = app.address.replace("http://", "https://");
    for origin in ["https://evil.example", "null", own_over_https.as_str()] {
        for (status, body) in both(&app, &[("origin", origin)]).await {
            assert_eq!(status, 403, "Origin {origin}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("http.allowed_origins"), "{message}");
        }
    }
}

#[tokio::test]
async fn loopback_the_public_url_origin_and_no_origin_pass() {
    let app = TestApp::spawn().await;
    let own = app.address.clone();
    for headers in [vec![], vec![("origin", own.as_str())]] {
        let [(call, call_body), (mcp, mcp_body)] = both(&app, &headers).await;
        assert_eq!(call, 200, "{headers:?}: {call_body}");
        assert_eq!(call_body["status"], "success");
        assert_eq!(mcp, 200, "{headers:?}: {mcp_body}");
        assert!(mcp_body["result"]["tools"].is_array(), "{mcp_body}");
    }
}

#[tokio::test]
async fn the_configured_hosts_and_origins_pass() {
    let app = TestApp::spawn_with(|config| {
        config.notify.public_url = Some("https://runbookd.example.net/".to_owned());
        config.http.allowed_hosts = vec!["runbookd.lan".to_owned()];
        config.http.allowed_origins = vec!["https://console.example.net:8443".to_owned()];
    })
    .await;
    for headers in [
        [
            ("host", "runbookd.lan:8080"),
            ("origin", "https://console.example.net:8443"),
        ],
        [
            ("host", "runbookd.example.net"),
            ("origin", "https://runbookd.example.net"),
        ],
    ] {
        let [(call, call_body), (mcp, mcp_body)] = both(&app, &headers).await;
        assert_eq!(call, 200, "{headers:?}: {call_body}");
        assert_eq!(mcp, 200, "{headers:?}: {mcp_body}");
    }
    // Not the default any more: the listen address is not where pages come from.
    let [(call, _), (mcp, _)] = both(&app, &[("origin", &app.address)]).await;
    assert_eq!((call, mcp), (403, 403));
}
