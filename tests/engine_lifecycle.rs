//! The application's engine worker in its life: woken at once by the decisions and controls
//! that give it work (not by its idle look, set here to a minute), and driving each run with
//! the playbook the run pinned, whatever happens to the file and across a restart. In process,
//! against the twin, with a real SQLite file.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::twin::Twin;
use common::{ADMIN_TOKEN, TestApp, eventually, reference};
use runbookd::config::Config;
use runbookd::store::approvals::{Approval, ApprovalStatus};
use runbookd::store::runs::RunState;

/// Far longer than any wait below: only a wake explains the worker moving in time.
fn idle_for_a_minute(config: &mut Config) {
    config.engine.idle_poll_ms = 60_000;
}

const WITHIN: Duration = Duration::from_secs(20);

/// The repository's playbooks, copied into `dir`.
fn copy_playbooks(dir: &Path) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/pbs-backup-stale.yaml"
    ))
    .unwrap();
    std::fs::write(dir.join("pbs-backup-stale.yaml"), &text).unwrap();
    text
}

async fn post_alert(app: &TestApp) -> i64 {
    let response = app
        .post_alertmanager(&reference("alertmanager-v4.json"))
        .await;
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["incidents"][0]["run_id"]
        .as_i64()
        .expect("the alert starts a run")
}

async fn pending_approval(app: &TestApp, run_id: i64) -> Approval {
    eventually("the run to wait for an approval", WITHIN, || async {
        let approvals = app.store.approvals_for_run(run_id).await.unwrap();
        approvals
            .into_iter()
            .find(|a| a.status == ApprovalStatus::Pending)
    })
    .await
}

async fn approve(app: &TestApp, approval: &Approval) {
    app.approve(approval.id).await;
}

/// Waits until `step` of the run has an attempt that finished.
async fn step_finished(app: &TestApp, run_id: i64, step: &str) {
    eventually(&format!("step {step} to finish"), WITHIN, || async {
        let attempts = app.store.step_attempts(run_id).await.unwrap();
        attempts
            .iter()
            .any(|a| a.step == step && a.status == "finished")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn resume_and_a_decision_wake_the_worker_at_once() {
    let twin = Twin::start("nfs-unmounted").await;
    let playbooks = tempfile::tempdir().unwrap();
    copy_playbooks(playbooks.path());
    let app =
        TestApp::spawn_engine(idle_for_a_minute, Some(twin.engine_parts(playbooks.path()))).await;
    let pause = app.post_json("/api/v1/pause", ADMIN_TOKEN, "").await;
    assert_eq!(pause.status(), 200);
    let run_id = post_alert(&app).await;
    let resume = app.post_json("/api/v1/resume", ADMIN_TOKEN, "").await;
    assert_eq!(resume.status(), 200);

    // Resume woke the worker: it diagnosed and parked the run on the unmount's approval.
    let approval = pending_approval(&app, run_id).await;
    assert_eq!(approval.step, "lazy_unmount");
    assert!(twin.ssh_log().iter().all(|c| !c.contains("umount")));

    // The decision woke it again: the approved step ran.
    approve(&app, &approval).await;
    step_finished(&app, run_id, "lazy_unmount").await;
    assert!(
        twin.ssh_log()
            .iter()
            .any(|c| c.ends_with("umount -l /mnt/pbs-datastore")),
        "{:?}",
        twin.ssh_log()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_run_in_flight_keeps_its_playbook_when_the_file_is_edited_or_removed() {
    for change in ["edited", "removed"] {
        let twin = Twin::start("nfs-unmounted").await;
        let playbooks = tempfile::tempdir().unwrap();
        let text = copy_playbooks(playbooks.path());
        // Another playbook stays in the directory, so the restarted service still has an
        // engine when the run's own file is removed.
        std::fs::write(
            playbooks.path().join("zz-other.yaml"),
            text.replace("name: pbs-backup-stale", "name: other-playbook"),
        )
        .unwrap();
        let app =
            TestApp::spawn_engine(idle_for_a_minute, Some(twin.engine_parts(playbooks.path())))
                .await;
        let run_id = post_alert(&app).await;
        let approval = pending_approval(&app, run_id).await;
        assert_eq!(approval.step, "lazy_unmount", "{change}");
        let db = app.db_path.clone();
        let _kept = app.stop().await;

        let file = playbooks.path().join("pbs-backup-stale.yaml");
        match change {
            "edited" => {
                let original = "run: \"umount -l {pbs.mountpoint}\"";
                assert!(text.contains(original));
                let edited = text.replace(original, "run: \"umount -f {pbs.mountpoint}\"");
                std::fs::write(&file, edited).unwrap();
            }
            _ => std::fs::remove_file(&file).unwrap(),
        }
        let parts = twin.engine_parts(playbooks.path());
        let loaded: Vec<&str> = parts
            .playbooks
            .iter()
            .map(|f| f.playbook.name.as_str())
            .collect();
        assert_eq!(
            loaded.contains(&"pbs-backup-stale"),
            change == "edited",
            "{change}: {loaded:?}"
        );
        let app = TestApp::spawn_engine(
            |config| {
                idle_for_a_minute(config);
                config.database.path = db.clone();
            },
            Some(parts),
        )
        .await;
        approve(&app, &approval).await;
        step_finished(&app, run_id, "lazy_unmount").await;
        let run = app.store.run(run_id).await.unwrap().unwrap();
        assert_ne!(
            run.state,
            RunState::Escalated,
            "{change}: {:?}",
            run.outcome
        );
        let unmounts: Vec<String> = twin
            .ssh_log()
            .into_iter()
            .filter(|c| c.contains("umount"))
            .collect();
        assert_eq!(
            unmounts,
            ["pbs timeout -k 5 30 umount -l /mnt/pbs-datastore"],
            "{change}: the original command, once"
        );
        app.stop().await;
    }
}
