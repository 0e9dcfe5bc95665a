//! The run as a picture: `runbookd serve --lab stale-nfs` resolves the reference alert, and the
//! incident page's inline SVG has one bar per diagnosis probe and per step attempt, in time
//! order, placed and sized on one time axis exactly as the stored times and durations say
//! (read back through `GET /api/v1/runs/{id}`), with the same in words for screen readers; the
//! run's own page `/runs/{id}` shows the same picture. The pages' CSP is unchanged by it and no
//! script appears.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::eventually;
use common::process::ServiceProcess;
use serde_json::Value;

const ADMIN: &str = "timeline-svg-admin-secret-0123456789";
/// The picture's width in SVG units (`src/http/ui/timeline_svg.rs`).
const WIDTH: f64 = 360.0;
/// The web page's policy before the picture existed: inline SVG needs nothing more.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// One bar as the API's stored data says it should be.
#[derive(Debug)]
struct Expected {
    kind: &'static str,
    name: String,
    start: DateTime<Utc>,
    duration_ms: i64,
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_resolved_runs_picture_has_a_bar_per_probe_and_step_sized_by_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let posted = service.post_reference_alert(ADMIN).await;
    let (incident_id, run_id) = (
        posted["incident_id"].as_i64().unwrap(),
        posted["run_id"].as_i64().unwrap(),
    );
    let detail = eventually("the run to end", Duration::from_secs(90), || async {
        let detail =
            common::fetch_json(&client, &format!("{base}/api/v1/runs/{run_id}"), ADMIN).await?;
        let state = detail["run"]["state"].as_str()?;
        (state == "resolved" || state == "escalated").then_some(detail)
    })
    .await;
    assert_eq!(detail["run"]["state"], "resolved", "{detail:#}");

    // What the database holds, through the API.
    let facts = &detail["run"]["facts"];
    let diagnosed_at = time(&facts["diagnosed_at"]);
    let mut expected: Vec<Expected> = facts["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Expected {
            kind: "probe",
            name: p["id"].as_str().unwrap().to_owned(),
            start: diagnosed_at + chrono::Duration::milliseconds(p["started_ms"].as_i64().unwrap()),
            duration_ms: p["duration_ms"].as_i64().unwrap(),
        })
        .collect();
    assert_eq!(expected.len(), 14, "the playbook's 14 probes: {facts:#}");
    let steps = detail["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "{detail:#}");
    expected.extend(steps.iter().map(|s| Expected {
        kind: "step",
        name: s["step"].as_str().unwrap().to_owned(),
        start: time(&s["started_at"]),
        duration_ms: s["duration_ms"].as_i64().unwrap(),
    }));
    assert_eq!(detail["approvals"].as_array().unwrap().len(), 0);
    let first = expected.iter().map(|e| e.start).min().unwrap();
    let last = expected
        .iter()
        .map(|e| e.start + chrono::Duration::milliseconds(e.duration_ms))
        .max()
        .unwrap();
    let scale = WIDTH / (last - first).num_milliseconds() as f64;

    // The page, signed in.
    let cookie = common::web::session_cookie(&client, &base, ADMIN).await;
    // The same picture on the incident's page and on the run's own.
    let mut pictures = Vec::new();
    for path in [
        format!("/incidents/{incident_id}"),
        format!("/runs/{run_id}"),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(response.headers()["content-security-policy"], CSP, "{path}");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script"), "no script on {path}");
        assert!(!html.contains(" style="), "no inline style on {path}");
        let start = html
            .find("<svg class=\"run-timeline\"")
            .unwrap_or_else(|| panic!("the run's picture on {path}"));
        let end = start + html[start..].find("</svg>").unwrap() + "</svg>".len();
        pictures.push(html[start..end].to_owned());
    }
    assert_eq!(pictures[0], pictures[1]);
    let svg_text = &pictures[0];
    let svg = roxmltree::Document::parse(svg_text).unwrap_or_else(|e| panic!("{e}: {svg_text}"));
    let root = svg.root_element();
    assert_eq!(root.attribute("role"), Some("img"));
    let labelled_by: Vec<&str> = root
        .attribute("aria-labelledby")
        .unwrap()
        .split(' ')
        .collect();
    let by_id = |id: &str| {
        root.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .and_then(|n| n.text())
            .unwrap_or_else(|| panic!("#{id} in {svg_text}"))
            .to_owned()
    };
    let title = by_id(labelled_by[0]);
    assert!(
        title.starts_with(&format!(
            "Run #{run_id} over time: 14 probe(s), 0 approval wait(s), 5 step attempt(s)"
        )),
        "{title}"
    );
    let words = by_id(labelled_by[1]);

    let bars: Vec<roxmltree::Node> = root.children().filter(|n| n.has_tag_name("g")).collect();
    assert_eq!(bars.len(), expected.len(), "one bar per probe and step");
    let mut previous_x = f64::MIN;
    let mut matched = vec![false; expected.len()];
    for bar in &bars {
        let class: Vec<&str> = bar.attribute("class").unwrap().split(' ').collect();
        assert_eq!(class[0], "span");
        let kind = class[1];
        let label = bar
            .children()
            .find(|n| n.has_tag_name("text"))
            .and_then(|n| n.text())
            .unwrap();
        let name = label.split(' ').nth(1).unwrap();
        let rect = bar.children().find(|n| n.has_tag_name("rect")).unwrap();
        let number = |a: &str| rect.attribute(a).unwrap().parse::<f64>().unwrap();
        let (x, width) = (number("x"), number("width"));
        assert!(
            x >= previous_x,
            "in time order: {label} at {x} after {previous_x}"
        );
        previous_x = x;
        // The stored item this bar draws: same kind and name, at its place, its width.
        let found = expected.iter().enumerate().position(|(i, e)| {
            !matched[i]
                && e.kind == kind
                && e.name == name
                && (x - (e.start - first).num_milliseconds() as f64 * scale).abs() < 0.002
                && (width - e.duration_ms as f64 * scale).abs() < 0.002
        });
        let i = found.unwrap_or_else(|| {
            panic!("{kind} {name} at x {x} width {width} matches no stored one: {expected:#?}")
        });
        matched[i] = true;
        assert_eq!(
            class[2], "ok",
            "{label}: the resolved run's bars all ended well"
        );
        let tip = bar.children().find(|n| n.has_tag_name("title")).unwrap();
        assert!(tip.text().unwrap().contains(name), "{label}");
    }
    for e in &expected {
        let sentence = match e.kind {
            "probe" => format!("Probe {} started", e.name),
            _ => format!("Step {} started", e.name),
        };
        assert!(words.contains(&sentence), "{sentence} in {words}");
    }
    // The longest bar is the longest stored duration: widths are proportional, not clamped.
    let widest = bars
        .iter()
        .map(|b| {
            let rect = b.children().find(|n| n.has_tag_name("rect")).unwrap();
            rect.attribute("width").unwrap().parse::<f64>().unwrap()
        })
        .fold(0.0, f64::max);
    let longest = expected.iter().map(|e| e.duration_ms).max().unwrap();
    assert!((widest - longest as f64 * scale).abs() < 0.002);
    assert!(service.terminate().await.success());
}
