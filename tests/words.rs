//! What a person reads on the web page, through the real binary on the twin (`serve --lab`):
//! the timeline in sentences with the raw detail one click away, evidence in words, an
//! accepted non-zero exit shown as expected with the playbook's reason, and approval cards
//! that name the host, what each command changes and what happens if nobody decides.

use crate::common;

use std::time::Duration;

use common::eventually;
use common::process::ServiceProcess;
use serde_json::{Value, json};

const ADMIN: &str = "words-admin-secret-0123456789abcdef";

/// A browser's session on the service: signed in through the login form.
struct Session {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

impl Session {
    async fn sign_in(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let cookie = common::web::session_cookie(&client, base, ADMIN).await;
        Self {
            client,
            base: base.to_owned(),
            cookie,
        }
    }

    async fn page(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    async fn api(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn run_state(&self, run: i64) -> String {
        self.api(&format!("/api/v1/runs/{run}")).await["run"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The page as a person sees it before opening anything: every `<details class="raw">` (an
/// event's raw detail) taken out.
fn unfolded(html: &str) -> String {
    let mut shown = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(r#"<details class="raw">"#) {
        shown.push_str(&rest[..start]);
        let end = rest[start..].find("</details>").expect("closed") + start;
        rest = &rest[end + "</details>".len()..];
    }
    shown.push_str(rest);
    shown
}

/// No JSON object and no `"key":` (as HTML escapes it) where a person reads by default.
fn assert_no_raw_json(html: &str, what: &str) {
    let shown = unfolded(html);
    assert!(!shown.contains('{'), "{what}: JSON on the page:\n{shown}");
    assert!(
        !shown.contains("&quot;:"),
        "{what}: a JSON key on the page:\n{shown}"
    );
}

/// The timeline's items: `<li>` to `</li>` inside `<ol class="timeline">`.
fn timeline(html: &str) -> Vec<&str> {
    let list = html.split(r#"<ol class="timeline">"#).nth(1).unwrap();
    let list = list.split("</ol>").next().unwrap();
    list.split("<li>").skip(1).collect()
}

#[tokio::test]
async fn a_resolved_stale_nfs_run_reads_in_words_with_the_raw_detail_one_click_away() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "stale-nfs", ADMIN, &[], "", &[]).await;
    let posted = service.post_reference_alert(ADMIN).await;
    let incident = posted["incident_id"].as_i64().unwrap();
    let run = posted["run_id"].as_i64().unwrap();
    let session = Session::sign_in(&service.address).await;
    let state = eventually("the run to end", Duration::from_secs(120), || async {
        let state = session.run_state(run).await;
        matches!(state.as_str(), "resolved" | "escalated").then_some(state)
    })
    .await;
    assert_eq!(state, "resolved");

    let page = session.page(&format!("/incidents/{incident}")).await;
    assert_no_raw_json(&page, "the incident page");
    let items = timeline(&page);
    let events = session.api(&format!("/api/v1/incidents/{incident}")).await["timeline"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(items.len(), events, "one item per event");
    for item in &items {
        assert!(
            item.contains(r#"<details class="raw"><summary>"#)
                && item.contains(r#"<code class="detail">{&quot;"#),
            "each event's raw detail is one click away: {item}"
        );
    }
    for sentence in [
        "PBSBackupStale (from alertmanager) fired: a new incident opened",
        "Diagnosis found stale_nfs_handles (evidence: log_classes: ",
        "ran `systemctl restart proxmox-backup proxmox-backup-proxy` on pbs in ",
        "The run ended resolved",
        "The incident is resolved: the run verified its fix",
    ] {
        assert!(
            items.iter().any(|item| item.contains(sentence)),
            "{sentence:?} in the timeline:\n{page}"
        );
    }
    // The evidence is a list of facts in words.
    assert!(page.contains("<dt>log_classes</dt>"), "{page}");
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn the_nfs_unmounted_run_names_its_host_and_shows_exit_32_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "nfs-unmounted", ADMIN, &[], "", &[]).await;
    let posted = service.post_reference_alert(ADMIN).await;
    let incident = posted["incident_id"].as_i64().unwrap();
    let run = posted["run_id"].as_i64().unwrap();
    let session = Session::sign_in(&service.address).await;
    let approval = eventually("the approval", Duration::from_secs(90), || async {
        let pending = session.api("/api/v1/approvals?status=pending").await;
        pending.as_array()?.first()?["id"].as_i64()
    })
    .await;

    // The card, on the home page and its own: the host, each command, what it changes, and
    // what happens if nobody decides.
    for path in ["/".to_owned(), format!("/approvals/{approval}")] {
        let page = session.page(&path).await;
        let card = page
            .split(&format!(
                r#"<article class="card approval" id="approval-{approval}">"#
            ))
            .nth(1)
            .and_then(|rest| rest.split("</article>").next())
            .unwrap_or_else(|| panic!("the card on {path}:\n{page}"));
        for expected in [
            "<dt>Runs on</dt><dd><strong>pbs</strong></dd>",
            "<code>lazy_unmount</code> on pbs: detaches the datastore",
            "NFS mount from PBS, even while it is busy",
            "<code>mount_datastore</code> on pbs: mounts the datastore",
            "<code>restart_pbs</code> on pbs: restarts the PBS services",
            "umount -l /mnt/pbs-datastore\nmount /mnt/pbs-datastore",
            "If nobody decides by ",
            "it is rejected and the run escalates to a human.",
        ] {
            assert!(card.contains(expected), "{path}: {expected:?} in\n{card}");
        }
        assert_no_raw_json(&page, &path);
    }

    let decided = session
        .client
        .post(format!(
            "{}/api/v1/approvals/{approval}/approve",
            service.address
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"comment": "the mount is gone, go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200, "{:?}", decided.text().await);
    let state = eventually("the run to end", Duration::from_secs(120), || async {
        let state = session.run_state(run).await;
        matches!(state.as_str(), "resolved" | "escalated").then_some(state)
    })
    .await;
    assert_eq!(state, "resolved");

    let page = session.page(&format!("/incidents/{incident}")).await;
    assert_no_raw_json(&page, "the incident page");
    let unmount = page
        .split(r#"<article class="card step">"#)
        .find(|card| card.contains("<h4>lazy_unmount "))
        .unwrap_or_else(|| panic!("the lazy_unmount step:\n{page}"));
    assert!(
        unmount.contains(r#"<span class="exit ok">exit 32: nothing was mounted</span>"#)
            && unmount.contains("(expected)")
            && !unmount.contains(r#"class="exit bad""#),
        "exit 32 is expected, with the playbook's reason, not in red:\n{unmount}"
    );
    let items = timeline(&page);
    for sentence in [
        "env-admin approved `umount -l /mnt/pbs-datastore` on pbs, then `mount /mnt/pbs-datastore` on pbs",
        "the mount is gone, go",
        ": exit 32: nothing was mounted (as the playbook expects)",
    ] {
        assert!(
            items.iter().any(|item| item.contains(sentence)),
            "{sentence:?} in the timeline:\n{page}"
        );
    }
    assert!(service.terminate().await.success());
}
