//! The web page in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver) at phone size, against the real binary on the twin. An approver signs in,
//! approves the remount nfs-unmounted asks about (one card naming the host of every command),
//! and reads the resolved run's timeline in sentences.
//! Screenshots of each page land in `target/ui-screenshots/` for review; `backups.png` is the
//! backups page on the mixed twin.
//!
//! Chromium and chromedriver come from `scripts/install-test-deps.sh`; without them this test
//! fails and says so. The browser is kept on loopback: every other host goes to a dead proxy.

use crate::common;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::eventually;
use common::process::ServiceProcess;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const ADMIN: &str = "browser-admin-secret-0123456789abcdef";
const APPROVER: &str = "browser-approver-secret-0123456789";
const APPROVER_NAME: &str = "oncall-alice";
/// A phone held upright (CSS pixels).
const PHONE: (u32, u32) = (412, 915);

/// `name` on the PATH, or a failure that says how to install it.
fn installed(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/install-test-deps.sh \
                 (it installs Debian's chromium and chromium-driver)"
            )
        })
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, in a process group of its own that Chromium joins;
/// the whole group is killed when this is dropped, so a failed test leaves no browser behind.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Driver {
    async fn start(log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(installed("chromedriver"))
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually(
            "chromedriver to be ready",
            Duration::from_secs(30),
            || async {
                let status: Value = client
                    .get(format!("{url}/status"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (status["value"]["ready"] == true).then_some(())
            },
        )
        .await;
        Self { child, url }
    }

    async fn browser(&self, profile: &Path) -> Client {
        let (width, height) = PHONE;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": installed("chromium"),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    // Containers often give /dev/shm 64 MiB, too little for Chromium.
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    // Loopback is reached directly; anything else meets a closed port.
                    "--proxy-server=http://127.0.0.1:9",
                ],
                // A desktop window is at least 500 px wide; a phone's viewport, meta viewport
                // and touch come from emulation.
                "mobileEmulation": {
                    "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0, "touch": true, "mobile": true},
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver opens a Chromium session");
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        client
    }
}

/// Waits until the browser shows a page whose path passes `expected` (a click that submits a
/// form returns before the next page has loaded).
async fn on_page(browser: &Client, what: &str, expected: impl Fn(&str) -> bool) {
    eventually(what, Duration::from_secs(30), || async {
        let url = browser.current_url().await.ok()?;
        let ready = browser
            .execute("return document.readyState", vec![])
            .await
            .ok()?;
        (expected(url.path()) && ready == "complete").then_some(())
    })
    .await;
}

/// The visible text of the page.
async fn text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Checks that the page fits a phone's width and saves the whole page, beyond the viewport,
/// as `name`: WebDriver's own screenshot stops at
/// the window, so this asks chromedriver for the DevTools capture.
async fn screenshot(driver: &Driver, browser: &Client, name: &str) {
    let size = browser
        .execute(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight, \
             window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        size[2], PHONE.0,
        "{name}: the page is laid out at phone width (meta viewport)"
    );
    assert!(
        size[0].as_u64() <= size[2].as_u64(),
        "{name}: nothing makes the page scroll sideways on a phone: {size}"
    );
    let session = browser.session_id().await.unwrap().expect("a session");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/session/{session}/goog/cdp/execute", driver.url))
        .timeout(Duration::from_secs(30))
        .json(&json!({
            "cmd": "Page.captureScreenshot",
            "params": {
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = answer["value"]["data"]
        .as_str()
        .unwrap_or_else(|| panic!("a screenshot from chromedriver: {answer}"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let path = screenshots_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn api(client: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test]
async fn an_approver_approves_from_a_phone_and_reads_the_timeline() {
    let chromium = installed("chromium");
    let _ = installed("chromedriver");
    eprintln!("browser: {}", chromium.display());
    let dir = tempfile::tempdir().unwrap();
    let tokens = [(APPROVER_NAME, "approver", APPROVER)];
    let service =
        ServiceProcess::start_lab(dir.path(), "nfs-unmounted", ADMIN, &tokens, "", &[]).await;
    let base = service.address.clone();
    let rest = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let posted = service.post_reference_alert(ADMIN).await;
    let incident_id = posted["incident_id"].as_i64().unwrap();
    let run_id = posted["run_id"].as_i64().unwrap();

    let driver = Driver::start(&dir.path().join("chromedriver.log")).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    // The session is closed (and Chromium quits) whether or not the walk succeeds.
    let walk = AssertUnwindSafe(walk(&driver, &browser, &rest, &base, incident_id, run_id))
        .catch_unwind()
        .await;
    let closed = browser.close().await;
    if let Err(panic) = walk {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
    assert!(service.terminate().await.success());
}

/// Types `token` into the login form and submits it.
async fn sign_in(browser: &Client, token: &str) {
    browser
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// What the on-call human does, in the browser.
async fn walk(
    driver: &Driver,
    browser: &Client,
    rest: &reqwest::Client,
    base: &str,
    incident_id: i64,
    run_id: i64,
) {
    // Not signed in: the page sends us to the login form.
    browser.goto(&format!("{base}/")).await.unwrap();
    on_page(browser, "the login page", |path| path == "/login").await;
    screenshot(driver, browser, "01-login.png").await;
    sign_in(browser, "wrong-token").await;
    eventually(
        "the refusal of a wrong token",
        Duration::from_secs(30),
        || async {
            let page = browser
                .find(Locator::Css("body"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            page.contains("That token is not valid").then_some(())
        },
    )
    .await;

    sign_in(browser, APPROVER).await;
    on_page(browser, "the home page", |path| path == "/").await;
    assert!(text(browser).await.contains(APPROVER_NAME));

    // nfs-unmounted asks once for the whole remount: one card lists every command, one tap.
    let step = "lazy_unmount";
    let approval = eventually(
        &format!("the approval for {step} on the page"),
        Duration::from_secs(60),
        || async {
            browser.goto(&format!("{base}/")).await.ok()?;
            let cards = browser
                .find_all(Locator::Css("article.approval"))
                .await
                .ok()?;
            for card in cards {
                let text = card.text().await.ok()?;
                if text.contains(step) && text.contains("pending") {
                    return Some(card);
                }
            }
            None
        },
    )
    .await;
    let card_text = approval.text().await.unwrap();
    for command in [
        "umount -l /mnt/pbs-datastore",
        "mount /mnt/pbs-datastore",
        "systemctl restart proxmox-backup",
    ] {
        assert!(card_text.contains(command), "{command}: {card_text}");
    }
    // The card names the host, what the remount changes, and what happens if nobody decides.
    for expected in [
        "Runs on",
        "lazy_unmount on pbs: detaches the datastore",
        "If nobody decides by",
        "it is rejected and the run escalates to a human",
    ] {
        assert!(card_text.contains(expected), "{expected}: {card_text}");
    }
    assert!(card_text.contains("Approve") && card_text.contains("Reject"));
    screenshot(driver, browser, "02-home-pending-approval.png").await;
    approval
        .find(Locator::Css("textarea[name=comment]"))
        .await
        .unwrap()
        .send_keys(&format!("{step} looks right"))
        .await
        .unwrap();
    approval
        .find(Locator::Css("button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    on_page(browser, "the decided approval", |path| {
        path.starts_with("/approvals/")
    })
    .await;
    let page = text(browser).await;
    assert!(
        page.contains(&format!("approved by {APPROVER_NAME}")),
        "{page}"
    );
    assert!(page.contains(&format!("{step} looks right")), "{page}");

    let state = eventually("the run to finish", Duration::from_secs(90), || async {
        let run = api(rest, base, &format!("/api/v1/runs/{run_id}")).await?;
        let state = run["run"]["state"].as_str()?.to_owned();
        (state == "resolved" || state == "escalated").then_some(state)
    })
    .await;
    assert_eq!(state, "resolved");

    browser
        .goto(&format!("{base}/incidents/{incident_id}"))
        .await
        .unwrap();
    let page = text(browser).await;
    for expected in [
        "resolved",
        "nfs_mount_missing",
        "lazy_unmount",
        "mount_datastore",
        "umount -l",
        "restart_pbs",
        "canary_backup",
        APPROVER_NAME,
        "approval.decided",
        "run.finished",
        // Events read as sentences; umount's exit 32 is expected, with the playbook's reason.
        "exit 32: nothing was mounted",
        "The run ended resolved",
    ] {
        assert!(
            page.contains(expected),
            "{expected} on the incident page:\n{page}"
        );
    }
    screenshot(driver, browser, "03-incident-timeline.png").await;
}

/// `/backups` on the mixed twin, at phone width: reached from the home page's nav, every group
/// the service knows has its bar, decommissioned ones are marked, nothing scrolls sideways.
#[tokio::test]
async fn the_backups_page_shows_every_group_on_a_phone() {
    let _ = installed("chromium");
    let _ = installed("chromedriver");
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceProcess::start_lab(dir.path(), "mixed", ADMIN, &[], "", &[]).await;
    let base = service.address.clone();
    let rest = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let driver = Driver::start(&dir.path().join("chromedriver.log")).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    let walk = AssertUnwindSafe(backups_walk(&driver, &browser, &rest, &base))
        .catch_unwind()
        .await;
    let closed = browser.close().await;
    if let Err(panic) = walk {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
    assert!(service.terminate().await.success());
}

async fn backups_walk(driver: &Driver, browser: &Client, rest: &reqwest::Client, base: &str) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    sign_in(browser, ADMIN).await;
    on_page(browser, "the home page", |path| path == "/").await;
    browser
        .find(Locator::Css("nav.pages a[href='/backups']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    on_page(browser, "the backups page", |path| path == "/backups").await;

    let status = api(rest, base, "/api/v1/backups")
        .await
        .expect("the service lists the groups");
    let groups = status["groups"].as_array().unwrap();
    let items = browser.find_all(Locator::Css("li.backup")).await.unwrap();
    assert_eq!(items.len(), groups.len(), "one item per group");
    let mut decommissioned = 0;
    for (item, group) in items.iter().zip(groups) {
        let text = item.text().await.unwrap();
        let name = group["group"].as_str().unwrap();
        let state = group["freshness"].as_str().unwrap();
        assert!(
            text.contains(name) && text.contains(state),
            "{name} {state}: {text}"
        );
        if state == "decommissioned" {
            decommissioned += 1;
            assert!(text.contains("its guest is gone"), "{text}");
        }
        // The bar is drawn, and inside the phone's width.
        let bar = item.find(Locator::Css("svg.age-bar")).await.unwrap();
        let (x, _, width, height) = bar.rectangle().await.unwrap();
        assert!(
            width > 100.0 && height > 5.0,
            "{name}'s bar is visible: {width}x{height}"
        );
        assert!(
            x + width <= f64::from(PHONE.0),
            "{name}'s bar fits the phone"
        );
    }
    assert_eq!(decommissioned, 8, "mixed keeps eight decommissioned groups");
    screenshot(driver, browser, "backups.png").await;
}
