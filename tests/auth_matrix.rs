//! Acceptance 4: every route × {no token, wrong token, each role}, plus the anonymous-ingest
//! opt-in.

use crate::common;

use common::{INGEST_TOKEN, TestApp, reference, token_for};
use runbookd::auth::Role;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Caller {
    Nobody,
    WrongToken,
    Role(Role),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Ingest,
    Read,
    Operate,
    Decide,
    Control,
    /// A one-tap link: the signed link is the credential, a bearer token neither helps nor hurts.
    Link,
    Nothing,
}

struct Route {
    method: &'static str,
    path: String,
    body: Option<String>,
    needs: Needs,
}

fn expected_status(needs: Needs, caller: Caller, success: u16) -> u16 {
    match (needs, caller) {
        (Needs::Nothing, _) => success,
        (Needs::Link, _) => 403,
        (_, Caller::Nobody | Caller::WrongToken) => 401,
        (Needs::Ingest, Caller::Role(Role::Ingest | Role::Admin)) => success,
        (Needs::Read, Caller::Role(Role::Agent | Role::Approver | Role::Admin)) => success,
        (Needs::Operate, Caller::Role(Role::Agent | Role::Admin)) => success,
        (Needs::Decide, Caller::Role(Role::Approver | Role::Admin)) => success,
        (Needs::Control, Caller::Role(Role::Admin)) => success,
        (_, Caller::Role(_)) => 403,
    }
}

#[tokio::test]
async fn every_route_checks_its_role() {
    let app = TestApp::spawn().await;
    let opened = app
        .post_alertmanager(&reference("alertmanager-v4.json"))
        .await;
    let id = opened.json::<Value>().await.unwrap()["incidents"][0]["incident_id"].clone();

    let routes = [
        Route {
            method: "POST",
            path: "/ingest".into(),
            body: Some(reference("ingest-generic.json")),
            needs: Needs::Ingest,
        },
        Route {
            method: "POST",
            path: "/ingest?source=pbs".into(),
            body: Some(reference("ingest-pbs-forwarder.json")),
            needs: Needs::Ingest,
        },
        Route {
            method: "POST",
            path: "/webhook/alertmanager".into(),
            body: Some(reference("alertmanager-v4.json")),
            needs: Needs::Ingest,
        },
        Route {
            method: "GET",
            path: "/api/v1/incidents".into(),
            body: None,
            needs: Needs::Read,
        },
        Route {
            method: "GET",
            path: format!("/api/v1/incidents/{id}"),
            body: None,
            needs: Needs::Read,
        },
        Route {
            method: "GET",
            path: "/api/v1/approvals?status=pending".into(),
            body: None,
            needs: Needs::Read,
        },
        // This app runs no engine: an allowed caller gets 409, not 401/403.
        Route {
            method: "POST",
            path: "/api/v1/runs".into(),
            body: Some(r#"{"playbook":"pbs-backup-stale"}"#.into()),
            needs: Needs::Operate,
        },
        Route {
            method: "POST",
            path: "/api/v1/runs/1/cancel".into(),
            body: None,
            needs: Needs::Operate,
        },
        Route {
            method: "POST",
            path: "/api/v1/approvals/1/approve".into(),
            body: None,
            needs: Needs::Decide,
        },
        Route {
            method: "POST",
            path: "/api/v1/approvals/1/reject".into(),
            body: None,
            needs: Needs::Decide,
        },
        // No run exists in this app: an allowed caller gets 404, not 401/403.
        Route {
            method: "GET",
            path: "/api/v1/runs/1".into(),
            body: None,
            needs: Needs::Read,
        },
        Route {
            method: "GET",
            path: "/api/v1/playbooks".into(),
            body: None,
            needs: Needs::Read,
        },
        Route {
            method: "POST",
            path: "/api/v1/pause".into(),
            body: None,
            needs: Needs::Control,
        },
        Route {
            method: "POST",
            path: "/api/v1/resume".into(),
            body: None,
            needs: Needs::Control,
        },
        Route {
            method: "GET",
            path: "/api/v1/safety".into(),
            body: None,
            needs: Needs::Read,
        },
        // No engine runs in this app: an allowed caller gets 409, not 401/403.
        Route {
            method: "GET",
            path: "/api/v1/backups".into(),
            body: None,
            needs: Needs::Read,
        },
        // No playbook or run names pbs in this app: an admin gets 404, not 401/403.
        Route {
            method: "POST",
            path: "/api/v1/breakers/pbs/reset".into(),
            body: Some(r#"{"reason":"auth matrix"}"#.into()),
            needs: Needs::Control,
        },
        Route {
            method: "POST",
            path: "/api/v1/dry-run".into(),
            body: Some(r#"{"enabled":false,"reason":"auth matrix"}"#.into()),
            needs: Needs::Control,
        },
        // Reaching the tools needs only `read`; each tool then checks its own permission
        // (`tools_check_their_own_permission` below).
        Route {
            method: "POST",
            path: "/api/call".into(),
            body: Some(r#"{"tool":"list_pending_approvals"}"#.into()),
            needs: Needs::Read,
        },
        Route {
            method: "POST",
            path: "/mcp".into(),
            body: Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#.into()),
            needs: Needs::Read,
        },
        Route {
            method: "GET",
            path: "/links/forged-link".into(),
            body: None,
            needs: Needs::Link,
        },
        Route {
            method: "POST",
            path: "/links/forged-link".into(),
            body: None,
            needs: Needs::Link,
        },
        Route {
            method: "GET",
            path: "/openapi.json".into(),
            body: None,
            needs: Needs::Nothing,
        },
        Route {
            method: "GET",
            path: "/healthz".into(),
            body: None,
            needs: Needs::Nothing,
        },
        Route {
            method: "GET",
            path: "/readyz".into(),
            body: None,
            needs: Needs::Nothing,
        },
        Route {
            method: "GET",
            path: "/metrics".into(),
            body: None,
            needs: Needs::Nothing,
        },
    ];
    let callers = [Caller::Nobody, Caller::WrongToken]
        .into_iter()
        .chain(Role::ALL.map(Caller::Role));

    let mut failures = Vec::new();
    let mut accepted_posts = 0;
    for route in &routes {
        for caller in callers.clone() {
            let mut request = match route.method {
                "POST" => app.client.post(app.url(&route.path)),
                _ => app.client.get(app.url(&route.path)),
            };
            if let Some(body) = &route.body {
                request = request
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(body.clone());
            }
            request = match caller {
                Caller::Nobody => request,
                Caller::WrongToken => request.bearer_auth("not-a-token-of-this-service"),
                Caller::Role(role) => request.bearer_auth(token_for(role)),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response.headers().get("www-authenticate").cloned();
            let success = match (route.method, route.path.as_str()) {
                ("POST", "/api/v1/runs") => 409,
                ("GET", "/api/v1/backups") => 409,
                (
                    "POST",
                    "/api/v1/pause" | "/api/v1/resume" | "/api/v1/dry-run" | "/api/call" | "/mcp",
                ) => 200,
                ("POST", path) if path.starts_with("/api/v1/") => 404,
                ("POST", _) => 202,
                (_, "/api/v1/runs/1") => 404,
                _ => 200,
            };
            let want = expected_status(route.needs, caller, success);
            if status == 202 {
                accepted_posts += 1;
            }
            let body = response.text().await.unwrap();
            if status != want {
                failures.push(format!(
                    "{} {} as {caller:?}: got {status}, want {want}: {body}",
                    route.method, route.path
                ));
            }
            if want == 401 && challenge.is_none() {
                failures.push(format!(
                    "{} {} as {caller:?}: 401 without WWW-Authenticate",
                    route.method, route.path
                ));
            }
            // A link's refusal is a page for the phone that opened it, unless JSON is asked for.
            if (want == 401 || want == 403)
                && route.needs != Needs::Link
                && !serde_json::from_str::<Value>(&body)
                    .is_ok_and(|b| b["error"]["code"].is_string())
            {
                failures.push(format!(
                    "{} {} as {caller:?}: error body is not JSON: {body}",
                    route.method, route.path
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Refused posts stored nothing: only the opening post and the accepted ones are there.
    assert_eq!(app.count("deliveries").await, 1 + accepted_posts);
}

#[tokio::test]
async fn a_forbidden_caller_is_told_its_role() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/incidents"))
        .bearer_auth(INGEST_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "token 'ingest' has role 'ingest', which may not read incidents"
    );
}

#[tokio::test]
async fn a_malformed_authorization_header_gets_401() {
    let app = TestApp::spawn().await;
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", INGEST_TOKEN] {
        let response = app
            .client
            .post(app.url("/ingest"))
            .header("authorization", header)
            .header("content-type", "application/json")
            .body(reference("ingest-generic.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
    }
    assert_eq!(app.count("deliveries").await, 0);
}

#[tokio::test]
async fn anonymous_ingest_only_when_the_config_opts_in() {
    let post_anonymously = |app: &TestApp| {
        app.client
            .post(app.url("/webhook/alertmanager"))
            .header("content-type", "application/json")
            .body(reference("alertmanager-v4.json"))
            .send()
    };

    let closed = TestApp::spawn().await;
    assert_eq!(post_anonymously(&closed).await.unwrap().status(), 401);

    let open = TestApp::spawn_with(|config| config.http.allow_anonymous_ingest = true).await;
    let response = post_anonymously(&open).await.unwrap();
    assert_eq!(response.status(), 202);
    let detail = open.get_json("/api/v1/incidents/1").await;
    assert_eq!(detail["timeline"][0]["actor"], "anonymous");

    // A wrong token is still refused, and anonymity grants no reading.
    let wrong = open
        .client
        .post(open.url("/webhook/alertmanager"))
        .bearer_auth("not-a-token-of-this-service")
        .header("content-type", "application/json")
        .body(reference("alertmanager-v4.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let read = open
        .client
        .get(open.url("/api/v1/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);
}

/// Every tool × every role, through both `/api/call` and `/mcp`: a role that lacks the tool's
/// permission gets a refusal that names it, and `tools/list` shows each role only its tools.
#[tokio::test]
async fn tools_check_their_own_permission() {
    use runbookd::auth::Permission;
    use runbookd::http::tools::CATALOG;

    let app = TestApp::spawn().await;
    let mut failures = Vec::new();
    for role in Role::ALL {
        let may_read = role.allows(Permission::Read);
        let listed = app
            .client
            .post(app.url("/mcp"))
            .bearer_auth(token_for(role))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#)
            .send()
            .await
            .unwrap();
        if !may_read {
            assert_eq!(listed.status(), 403, "{role:?} may not reach /mcp");
        } else {
            let listed: Value = listed.json().await.unwrap();
            let mut names: Vec<&str> = listed["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            names.sort();
            let mut want: Vec<&str> = CATALOG
                .iter()
                .filter(|t| role.allows(t.permission))
                .map(|t| t.name)
                .collect();
            want.sort();
            assert_eq!(names, want, "tools/list for {role:?}");
        }
        for tool in CATALOG.iter() {
            let arguments = match tool.name {
                "get_incident" => r#"{"incident_id": 1}"#,
                "cancel_run" => r#"{"run_id": 1}"#,
                _ => "{}",
            };
            let bridge = app
                .client
                .post(app.url("/api/call"))
                .bearer_auth(token_for(role))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"tool":"{}","arguments":{arguments}}}"#,
                    tool.name
                ))
                .send()
                .await
                .unwrap();
            let status = bridge.status().as_u16();
            let body: Value = bridge.json().await.unwrap();
            let allowed = may_read && role.allows(tool.permission);
            let refused = status == 401 || status == 403;
            if allowed == refused || status >= 500 {
                failures.push(format!(
                    "/api/call {} as {role:?}: {status} {body}",
                    tool.name
                ));
            }
            if may_read && !allowed {
                let message = body["error"].as_str().unwrap_or_default();
                if !message.contains(&format!("may not call {}", tool.name)) {
                    failures.push(format!("{} as {role:?}: unclear refusal {body}", tool.name));
                }
            }
            if !may_read {
                continue;
            }
            let called = app
                .client
                .post(app.url("/mcp"))
                .bearer_auth(token_for(role))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(format!(
                    r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{}","arguments":{arguments}}}}}"#,
                    tool.name
                ))
                .send()
                .await
                .unwrap();
            if called.status() != 200 {
                failures.push(format!(
                    "/mcp {} as {role:?}: {}",
                    tool.name,
                    called.status()
                ));
                continue;
            }
            let result: Value = called.json().await.unwrap();
            let text = result["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let refused = result["result"]["isError"] == true && text.contains("may not call");
            if allowed == refused {
                failures.push(format!("/mcp {} as {role:?}: {result}", tool.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
