//! `GET /openapi.json` describes every REST route, with schemas and auth.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestApp;
use serde_json::Value;

/// DESIGN.md's HTTP contract, plus the routes the contract names only by group.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/ingest"),
    ("post", "/webhook/alertmanager"),
    ("get", "/api/v1/incidents"),
    ("get", "/api/v1/incidents/{id}"),
    ("get", "/api/v1/runs/{id}"),
    ("post", "/api/v1/runs"),
    ("post", "/api/v1/runs/{id}/cancel"),
    ("get", "/api/v1/approvals"),
    ("post", "/api/v1/approvals/{id}/approve"),
    ("post", "/api/v1/approvals/{id}/reject"),
    ("post", "/api/v1/pause"),
    ("post", "/api/v1/resume"),
    ("get", "/api/v1/playbooks"),
    ("get", "/api/v1/safety"),
    ("get", "/api/v1/backups"),
    ("post", "/api/v1/breakers/{target}/reset"),
    ("post", "/api/v1/dry-run"),
    ("post", "/mcp"),
    ("post", "/api/call"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/links/{token}"),
    ("post", "/links/{token}"),
];

async fn description(app: &TestApp) -> Value {
    // Open, like the health checks: a client reads it before it has a token.
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn operations(api: &Value) -> BTreeSet<(String, String)> {
    api["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn every_route_of_the_contract_is_described() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let described = operations(&api);
    let missing: Vec<_> = CONTRACT
        .iter()
        .filter(|(m, p)| !described.contains(&(m.to_string(), p.to_string())))
        .collect();
    assert!(missing.is_empty(), "not in /openapi.json: {missing:?}");
}

#[tokio::test]
async fn every_described_route_exists_and_states_its_auth() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in operations(&api) {
        let operation = &api["paths"][&path][&method];
        let open = ["/healthz", "/readyz", "/metrics"].contains(&path.as_str());
        // A one-tap link carries its own signed credential instead of a token.
        let link = path == "/links/{token}";
        if !open && !link {
            assert!(
                operation["security"][0].get("bearer").is_some(),
                "{method} {path} names no auth"
            );
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Roles:"),
                "{method} {path} does not name its roles: {description:?}"
            );
        }
        // The route is served: without a token it is refused (or answered), never unknown.
        let url = app.url(
            &path
                .replace("{id}", "1")
                .replace("{token}", "forged")
                .replace("{target}", "pbs"),
        );
        let response = match method.as_str() {
            "get" => app.client.get(url),
            "post" => app.client.post(url),
            other => panic!("unexpected method {other}"),
        }
        .send()
        .await
        .unwrap();
        let status = response.status().as_u16();
        let want = match (open, link) {
            (true, _) => 200,
            (_, true) => 403,
            _ => 401,
        };
        assert_eq!(status, want, "{method} {path} without a token");
    }
}

/// openapi-spec-validator's complaints, and what a client generator needs: one name per
/// operation, each saying what it does (`list_incidents`, not `list`), and every answer described.
#[tokio::test]
async fn every_operation_has_its_own_descriptive_id_and_every_answer_a_description() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    let descriptive = regex::Regex::new(r"^[a-z]+(_[a-z]+)+$").unwrap();
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut undescribed = Vec::new();
    for (method, path) in operations(&api) {
        let operation = &api["paths"][&path][&method];
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            descriptive.is_match(id),
            "{method} {path}: operationId {id:?} is not verb_object"
        );
        ids.entry(id.to_owned())
            .or_default()
            .push(format!("{method} {path}"));
        for (status, answer) in operation["responses"].as_object().unwrap() {
            if answer["description"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                undescribed.push(format!("{method} {path} {status}"));
            }
        }
    }
    let repeated: Vec<_> = ids.iter().filter(|(_, ops)| ops.len() > 1).collect();
    assert!(repeated.is_empty(), "operationIds used twice: {repeated:?}");
    assert!(
        undescribed.is_empty(),
        "answers without a description: {undescribed:?}"
    );
}

/// The answers a client must handle are on each route: the bearer layer's 401 and 403 where it
/// applies, the timeout's 503 everywhere, 400 and 404 for an id in the path, 413 and 415 for a
/// JSON body; intake's 401, 403 and 503 included.
#[tokio::test]
async fn every_route_documents_its_error_answers() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    let mut missing = Vec::new();
    for (method, path) in operations(&api) {
        let operation = &api["paths"][&path][&method];
        let mut want = vec!["503"];
        if operation["security"][0].get("bearer").is_some() {
            want.extend(["401", "403"]);
        }
        if path.contains("{id}") {
            want.extend(["400", "404"]);
        }
        let body = &operation["requestBody"];
        if body["required"] == true && body["content"].get("application/json").is_some() {
            want.extend(["413", "415"]);
        }
        for status in want {
            if operation["responses"].get(status).is_none() {
                missing.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented answers: {missing:?}");
}

#[tokio::test]
async fn the_approval_schema_carries_what_a_decider_needs() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    let approval = &api["components"]["schemas"]["Approval"]["properties"];
    for field in [
        "run_id",
        "step",
        "command",
        "risk",
        "evidence",
        "expires_at",
        "status",
    ] {
        assert!(approval.get(field).is_some(), "Approval lacks {field}");
    }
    let error = &api["components"]["schemas"]["ErrorDetail"]["properties"];
    assert!(error.get("code").is_some() && error.get("message").is_some());
}

/// Routes added with plain axum `.route(...)` bypass the description; only the ones listed
/// here may: the description itself, `/mcp` (described by hand), and the web page's HTML.
#[test]
fn no_rest_route_bypasses_the_description() {
    let plain_route = regex::Regex::new(r#"\.route(?:_service)?\(\s*"([^"]+)""#).unwrap();
    let allowed = [
        "/openapi.json",
        "/mcp",
        "/",
        "/login",
        "/logout",
        "/backups",
        "/incidents/{id}",
        "/runs/{id}",
        "/approvals/{id}",
        "/approvals/{id}/approve",
        "/approvals/{id}/reject",
        "/pause",
        "/resume",
        "/static/style.css",
    ];
    let mut bypassing = Vec::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for found in plain_route.captures_iter(&text) {
                if !allowed.contains(&&found[1]) {
                    bypassing.push(format!("{}: {}", path.display(), &found[1]));
                }
            }
        }
    }
    assert!(
        bypassing.is_empty(),
        "routes outside /openapi.json: {bypassing:?}"
    );
}

#[tokio::test]
async fn the_backups_route_describes_every_answer_and_its_states() {
    let app = TestApp::spawn().await;
    let api = description(&app).await;
    let operation = &api["paths"]["/api/v1/backups"]["get"];
    let responses = operation["responses"].as_object().unwrap();
    for status in [
        "200", "400", "401", "403", "404", "409", "422", "502", "503",
    ] {
        let description = responses[status]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(!description.is_empty(), "{status} is not described");
    }
    let parameters: Vec<&str> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["datastore", "playbook"]);
    let freshness = &api["components"]["schemas"]["Freshness"]["enum"];
    assert_eq!(
        freshness,
        &serde_json::json!(["fresh", "stale", "decommissioned"])
    );
}
