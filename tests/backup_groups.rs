//! Backup freshness at a glance, against `runbookd serve --lab mixed` (two stale groups, eight
//! decommissioned ones lingering, the rest fresh): `GET /api/v1/backups`, the `/backups` page and
//! `runbookd backups` (the real binary, to a pipe) each show every group the twin holds, with its
//! age, its state and its bar; decommissioned groups are marked. A dry run (it changes nothing in
//! the twin) diagnoses the alert first, so the groups it looked at name it as their last run.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::eventually;
use common::process::ServiceProcess;
use serde_json::{Value, json};

const ADMIN: &str = "backups-admin-secret-0123456789abcdef";
const AGENT: &str = "backups-agent-secret-0123456789abcdef";
/// The playbook's `stale_after_hours`, as shipped.
const THRESHOLD_HOURS: f64 = 48.0;

/// What the twin itself holds: group → (last backup, snapshots).
async fn twin_groups(dir: &Path) -> BTreeMap<String, (DateTime<Utc>, u64)> {
    let env = std::fs::read_to_string(dir.join("data/lab/env")).unwrap();
    let control = env
        .lines()
        .find_map(|l| l.strip_prefix("CONTROL="))
        .expect("lab/env names the control API");
    let world: Value = reqwest::get(format!("{control}/world"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    world["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let kind = match g["kind"].as_str().unwrap() {
                "qemu" => "vm",
                "lxc" => "ct",
                other => panic!("a guest kind: {other}"),
            };
            (
                format!("{kind}/{}", g["vmid"]),
                (
                    g["last_backup"].as_str().unwrap().parse().unwrap(),
                    g["count"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn decommissioned(group: &str) -> bool {
    runbookd::lab::estate::DECOMMISSIONED
        .iter()
        .any(|(kind, vmid)| format!("{}/{vmid}", kind.backup_type()) == group)
}

/// The state a group of this age must show.
fn expected_state(group: &str, last: DateTime<Utc>) -> &'static str {
    let age = (Utc::now() - last).num_seconds() as f64 / 3600.0;
    if decommissioned(group) {
        "decommissioned"
    } else if age >= THRESHOLD_HOURS {
        "stale"
    } else {
        "fresh"
    }
}

/// A signed-in page client: the session cookie from `POST /login`.
async fn page(base: &str, token: &str, path: &str) -> (reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let cookie = common::web::session_cookie(&client, base, token).await;
    let response = client
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let headers = response.headers().clone();
    (headers, response.text().await.unwrap())
}

/// The `<li>` of one group on the page.
fn group_item<'a>(html: &'a str, group: &str) -> &'a str {
    let id = format!("id=\"group-{}\"", group.replace('/', "-"));
    let start = html
        .find(&id)
        .unwrap_or_else(|| panic!("{group} on the page:\n{html}"));
    let item = &html[start..];
    &item[..item.find("</li>").unwrap()]
}

#[tokio::test]
async fn the_page_the_api_and_the_cli_show_every_group_of_the_mixed_twin() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [("reader", "agent", AGENT)];
    let service = ServiceProcess::start_lab(dir.path(), "mixed", ADMIN, &tokens, "", &[]).await;
    let base = service.address.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dry_run = client
        .post(format!("{base}/api/v1/dry-run"))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": true, "reason": "look, do not touch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dry_run.status(), 200);
    let posted = service.post_reference_alert(ADMIN).await;
    let (incident_id, run_id) = (
        posted["incident_id"].as_i64().unwrap(),
        posted["run_id"].as_i64().unwrap(),
    );
    eventually("the dry run to end", Duration::from_secs(60), || async {
        let run =
            common::fetch_json(&client, &format!("{base}/api/v1/runs/{run_id}"), AGENT).await?;
        (run["run"]["state"] == "rehearsed").then_some(())
    })
    .await;

    let twin = twin_groups(dir.path()).await;
    let states: Vec<&str> = twin
        .iter()
        .map(|(group, (last, _))| expected_state(group, *last))
        .collect();
    for state in ["fresh", "stale", "decommissioned"] {
        assert!(
            states.contains(&state),
            "mixed has {state} groups: {twin:?}"
        );
    }

    // The REST answer: the same groups, oldest first, each with its state and last run.
    let response = client
        .get(format!("{base}/api/v1/backups"))
        .bearer_auth(AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let api: Value = response.json().await.unwrap();
    assert_eq!(api["stale_after_hours"], 48);
    // A datastore PBS does not have is the caller's mistake (404), not an outage (502).
    let unknown = client
        .get(format!("{base}/api/v1/backups?datastore=nosuch"))
        .bearer_auth(AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown: Value = unknown.json().await.unwrap();
    let message = unknown["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("PBS has no datastore nosuch")
            && message.contains("datastore 'nosuch' does not exist"),
        "{unknown}"
    );
    assert_eq!(api["playbook"], "pbs-backup-stale");
    let listed: Vec<&str> = api["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        twin.keys().map(String::as_str).collect(),
        "{api:#}"
    );
    // Stale first, then fresh, then decommissioned; oldest first within each.
    let rank = |g: &Value| match g["freshness"].as_str().unwrap() {
        "stale" => 0,
        "fresh" => 1,
        _ => 2,
    };
    assert!(
        api["groups"].as_array().unwrap().windows(2).all(|w| {
            rank(&w[0]) < rank(&w[1])
                || (rank(&w[0]) == rank(&w[1])
                    && w[0]["age_hours"].as_f64() >= w[1]["age_hours"].as_f64())
        }),
        "{api:#}"
    );
    for g in api["groups"].as_array().unwrap() {
        let name = g["group"].as_str().unwrap();
        let (last, count) = twin[name];
        let age = (Utc::now() - last).num_seconds() as f64 / 3600.0;
        assert!(
            (g["age_hours"].as_f64().unwrap() - age).abs() < 0.2,
            "{name}: {g}"
        );
        assert_eq!(g["freshness"], expected_state(name, last), "{name}: {g}");
        assert_eq!(g["backup_count"], count, "{name}");
        // The dry run looked at the alert's group and at every decommissioned one.
        let looked = name == "vm/451" || name == "ct/101" || decommissioned(name);
        if looked {
            assert_eq!(g["last_run"]["run_id"], run_id, "{name}: {g}");
            assert_eq!(g["last_run"]["incident_id"], incident_id, "{name}: {g}");
            assert_eq!(g["last_run"]["state"], "rehearsed", "{name}: {g}");
        } else {
            assert!(g["last_run"].is_null(), "{name}: {g}");
        }
    }

    // The page: every group with its age, its state, its bar; the home page links to it.
    let (_, home) = page(&base, AGENT, "/").await;
    assert!(home.contains(r#"<a href="/backups">Backups</a>"#), "{home}");
    let (headers, html) = page(&base, AGENT, "/backups").await;
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains(" style="), "no inline style: {html}");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert!(html.contains("a group is stale after"), "{html}");
    let fill =
        regex::Regex::new(r#"<rect class="fill-(\w+)" x="0" y="0" width="([0-9.]+)""#).unwrap();
    for g in api["groups"].as_array().unwrap() {
        let name = g["group"].as_str().unwrap();
        let state = g["freshness"].as_str().unwrap();
        let item = group_item(&html, name);
        assert!(
            item.starts_with(&format!("id=\"group-{}\"", name.replace('/', "-"))),
            "{item}"
        );
        assert!(
            item.contains(&format!(r#"class="badge b-{state}">{state}<"#)),
            "{name} marked {state}: {item}"
        );
        let age = g["age_hours"].as_f64().unwrap();
        let shown_age = if age >= 24.0 * 14.0 {
            format!("{:.0} d / 48 h", age / 24.0)
        } else if age >= 10.0 {
            format!("{age:.0} h / 48 h")
        } else {
            format!("{age:.1} h / 48 h")
        };
        assert!(item.contains(&shown_age), "{name}: {shown_age} in {item}");
        let bar = fill
            .captures(item)
            .unwrap_or_else(|| panic!("{name}'s bar: {item}"));
        assert_eq!(&bar[1], state, "{name}'s bar is coloured by its state");
        // Two thresholds fill the bar; the threshold is at its middle.
        let expected_width = (age / (2.0 * THRESHOLD_HOURS)).min(1.0) * 100.0;
        let width: f64 = bar[2].parse().unwrap();
        assert!(
            (width - expected_width).abs() < 0.2,
            "{name}: width {width}, age {age}"
        );
        assert!(
            item.contains(r#"<line class="threshold" x1="50""#),
            "{item}"
        );
        if state == "decommissioned" {
            assert!(item.contains("its guest is gone"), "{item}");
        }
        if !g["last_run"].is_null() {
            assert!(
                item.contains(&format!(
                    r#"<a href="/runs/{run_id}">run #{run_id}</a> of <a href="/incidents/{incident_id}">incident #{incident_id}</a>"#
                )),
                "{name} links its last run: {item}"
            );
        } else {
            assert!(item.contains("no run has worked on it"), "{item}");
        }
    }

    // The terminal: the same groups with text bars, to a pipe without colour.
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .arg("backups")
            .env("RUNBOOKD_URL", &base)
            .env("RUNBOOKD_TOKEN", AGENT)
            .env_remove("NO_COLOR")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour to a pipe: {stdout}");
    assert!(!stdout.contains(AGENT), "{stdout}");
    assert!(
        stdout.starts_with(
            "datastore pbs-datastore: a group is stale after 48 h (pbs-backup-stale's stale_after_hours)\n"
        ),
        "{stdout}"
    );
    let cell = regex::Regex::new(r"^(\S+)\s+([█░]{16})\s+(\S+) / 48h\s+(\w+)\s").unwrap();
    let rows: BTreeMap<String, (String, String)> = stdout
        .lines()
        .filter_map(|line| cell.captures(line))
        .map(|c| (c[1].to_owned(), (c[2].to_owned(), c[4].to_owned())))
        .collect();
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        twin.keys().collect::<Vec<_>>(),
        "{stdout}"
    );
    for g in api["groups"].as_array().unwrap() {
        let name = g["group"].as_str().unwrap();
        let (bar, state) = &rows[name];
        assert_eq!(state, g["freshness"].as_str().unwrap(), "{stdout}");
        let age = g["age_hours"].as_f64().unwrap();
        let filled = ((age / (2.0 * THRESHOLD_HOURS)).min(1.0) * 16.0).round() as usize;
        assert_eq!(bar.matches('█').count(), filled, "{name}: {stdout}");
    }
    let counts = |state: &str| states.iter().filter(|s| **s == state).count();
    assert!(
        stdout.ends_with(&format!(
            "{} fresh, {} stale, {} decommissioned\n",
            counts("fresh"),
            counts("stale"),
            counts("decommissioned")
        )),
        "{stdout}"
    );
    assert!(service.terminate().await.success());
}

/// Without an engine there is no PBS to ask: the API says so with 409; a bad query is 400.
#[tokio::test]
async fn without_an_engine_backups_say_why_there_is_nothing_to_show() {
    let app = common::TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/backups"))
        .bearer_auth(common::AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no engine runs here"),
        "{body}"
    );
    let bad = app
        .client
        .get(app.url("/api/v1/backups?color=blue"))
        .bearer_auth(common::AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "an unknown parameter is refused");
}
