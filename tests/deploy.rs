//! The shipped deployments: the Kubernetes kustomizations render (`kubectl kustomize`, offline)
//! into the objects they must be; the systemd unit passes `systemd-analyze verify` and carries
//! its hardening; the configs they ship load, with valid playbook settings; and
//! docker-compose.yml runs as written: each service's command and config file, run as local
//! processes (the twin, runbookd, Debian's Alertmanager with the compose file's own
//! alertmanager.yml), takes an alert fired into Alertmanager to a resolved run.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use runbookd::config::{Config, Overrides};
use serde::Deserialize;
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every object `kubectl kustomize DIR` renders, as JSON values.
fn kustomize(dir: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objects:#?}"))
}

/// The config file runbookd would read loads, and its playbook settings fit the built-in
/// playbooks (secrets are not there to read, so tokens and inventory are not resolved).
fn config_loads(text: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let (config, source) = Config::load(Some(file.path()), &Overrides::default())
        .unwrap_or_else(|problems| panic!("{problems:#?}\n{text}"));
    let mut playbooks = runbookd::playbook::builtin::load_builtin().unwrap();
    config
        .apply_playbook_settings(&source, &mut playbooks)
        .unwrap_or_else(|problems| panic!("{problems:#?}"));
}

fn check_base_objects(objects: &[Value]) {
    let deployment = object(objects, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--require-engine"), "{args:?}");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    let mount = |name: &str| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["mountPath"]
            .clone()
    };
    let pvc = object(objects, "PersistentVolumeClaim");
    assert_eq!(
        volume("data")["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(mount("data"), "/data");
    let config_map = object(objects, "ConfigMap");
    assert_eq!(
        volume("config")["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    assert_eq!(mount("config"), "/etc/runbookd");
    // Secrets are referenced, never rendered: no Secret object comes out of the repository.
    assert_eq!(
        volume("secrets")["secret"]["secretName"],
        "runbookd-secrets"
    );
    assert!(objects.iter().all(|o| o["kind"] != "Secret"));
    let config = config_map["data"]["runbookd.toml"].as_str().unwrap();
    for token in ["admin-token", "ingest-token"] {
        assert!(
            config.contains(&format!("secret_file = \"/run/secrets/runbookd/{token}\"")),
            "{config}"
        );
    }
    config_loads(config);
    object(objects, "Service");
}

#[test]
fn the_kubernetes_base_and_the_estate_overlay_render_the_right_objects() {
    let base = kustomize("deploy/kubernetes/base");
    check_base_objects(&base);
    assert!(
        object(&base, "ConfigMap")["data"]["runbookd.toml"]
            .as_str()
            .unwrap()
            .lines()
            .all(|line| line != "[ssh]"),
        "the base names no estate"
    );

    let overlay = kustomize("deploy/kubernetes/overlays/estate");
    check_base_objects(&overlay);
    for o in &overlay {
        assert_eq!(o["metadata"]["namespace"], "ai-platform", "{o:#}");
    }
    let service = object(&overlay, "Service");
    assert_eq!(service["spec"]["type"], "NodePort");
    let image =
        object(&overlay, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(image.starts_with("ghcr.io/"), "{image}");
    let config = object(&overlay, "ConfigMap")["data"]["runbookd.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    for section in [
        "[ssh]",
        "[pbs]",
        "[pve]",
        "[playbook_settings.pbs-backup-stale]",
    ] {
        assert!(config.contains(section), "{config}");
    }
    // Infisical fills the Secret the Deployment reads.
    let infisical = object(&overlay, "InfisicalSecret");
    assert_eq!(
        infisical["spec"]["managedKubeSecretReferences"][0]["secretName"],
        "runbookd-secrets"
    );
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/runbookd.service")).unwrap();
    for key in [
        "DynamicUser=yes",
        "StateDirectory=runbookd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "LoadCredential=pbs-token:",
        "--require-engine",
    ] {
        assert!(unit.contains(key), "the unit lacks {key:?}");
    }
    // Secrets come through systemd credentials: the config reads each from there.
    let config = std::fs::read_to_string(root().join("deploy/systemd/runbookd.toml")).unwrap();
    for line in unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
    {
        let name = line.split(':').next().unwrap();
        assert!(
            config.contains(&format!("\"/run/credentials/runbookd.service/{name}\"")),
            "the config does not read the credential {name}"
        );
    }
    config_loads(&config);

    // verify checks that ExecStart's program exists: point it at this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbookd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/runbookd", env!("CARGO_BIN_EXE_runbookd")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (the systemd package)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{stderr}");
    assert!(!stderr.contains("runbookd.service:"), "{stderr}");
}

#[derive(Deserialize)]
struct Compose {
    services: std::collections::BTreeMap<String, Service>,
}

#[derive(Deserialize)]
struct Service {
    command: Vec<String>,
    #[serde(default)]
    environment: std::collections::BTreeMap<String, String>,
    healthcheck: Option<Healthcheck>,
}

#[derive(Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A compose value as compose runs it: `${NAME:-default}` unset (its default), `$$` unescaped,
/// and its container paths moved under `dir`.
fn local(text: &str, dir: &Path) -> String {
    let defaults = regex::Regex::new(r"\$\{[A-Z_]+:-([^}]*)\}").unwrap();
    defaults
        .replace_all(text, "$1")
        .replace("/data/", &format!("{}/", dir.join("data").display()))
        .replace("$$", "$")
}

fn spawn(program: &str, args: &[String], env: &[(String, String)]) -> std::process::Child {
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUNBOOKD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Kills a child process when the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn docker_compose_runs_as_written_and_alertmanager_delivers_to_a_resolved_run() {
    let compose: Compose = serde_norway::from_str(
        &std::fs::read_to_string(root().join("docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/lab")).unwrap();
    let binary = env!("CARGO_BIN_EXE_runbookd");
    let (admin, ingest) = (
        "compose-admin-secret-0123456789abcdef",
        "compose-ingest-secret-0123456789",
    );

    // The twin, as the lab service runs it; ready when its own health check passes.
    let lab = &compose.services["lab"];
    let args: Vec<String> = lab.command.iter().map(|a| local(a, dir.path())).collect();
    let _lab = Running(spawn(binary, &args, &[]));
    let test = &lab.healthcheck.as_ref().unwrap().test;
    assert_eq!(test[..2], ["CMD", "bash"]);
    let check: Vec<String> = test[2..].iter().map(|a| local(a, dir.path())).collect();
    common::eventually(
        "the lab's health check",
        Duration::from_secs(30),
        || async {
            Command::new("bash")
                .args(&check)
                .stderr(Stdio::null())
                .status()
                .ok()?
                .success()
                .then_some(())
        },
    )
    .await;

    // runbookd, as its service runs it, on a free port instead of the container's 8080.
    let service = &compose.services["runbookd"];
    let port = free_port();
    let mut env: Vec<(String, String)> = service
        .environment
        .keys()
        .map(|k| (k.clone(), String::new()))
        .collect();
    for (key, value) in &mut env {
        *value = match key.as_str() {
            "RUNBOOKD_LISTEN" => format!("127.0.0.1:{port}"),
            "RUNBOOKD_ADMIN_TOKEN" => admin.to_owned(),
            "RUNBOOKD_INGEST_TOKEN" => ingest.to_owned(),
            other => panic!("the test does not know {other}"),
        };
    }
    // The image's ENV.
    env.push(("RUNBOOKD_DB".into(), local("/data/runbookd.db", dir.path())));
    let args: Vec<String> = service
        .command
        .iter()
        .map(|a| local(a, dir.path()))
        .collect();
    let _runbookd = Running(spawn(binary, &args, &env));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = common::eventually("runbookd to be ready", Duration::from_secs(30), || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    })
    .await;
    assert_eq!(ready["remediation"]["enabled"], true, "{ready}");

    // Alertmanager (Debian's) with the compose file's own alertmanager.yml: only the
    // container's addresses and secret path differ.
    let alertmanager = &compose.services.get("alertmanager").unwrap();
    let secret = dir.path().join("ingest_token");
    std::fs::write(&secret, ingest).unwrap();
    let config = std::fs::read_to_string(root().join("deploy/compose/alertmanager.yml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("/run/secrets/ingest_token", secret.to_str().unwrap());
    let config_file = dir.path().join("alertmanager.yml");
    std::fs::write(&config_file, config).unwrap();
    let am_port = free_port();
    let args: Vec<String> = alertmanager
        .command
        .iter()
        .map(|a| {
            a.replace(
                "/etc/alertmanager/alertmanager.yml",
                config_file.to_str().unwrap(),
            )
            .replace(
                "=/alertmanager",
                &format!("={}", dir.path().join("am").display()),
            )
            .replace("127.0.0.1:9093", &format!("127.0.0.1:{am_port}"))
        })
        .collect();
    let _alertmanager = Running(spawn("prometheus-alertmanager", &args, &[]));
    let am = format!("http://127.0.0.1:{am_port}");
    common::eventually(
        "Alertmanager to be ready",
        Duration::from_secs(30),
        || async {
            let ready = client.get(format!("{am}/-/ready")).send().await.ok()?;
            ready.status().is_success().then_some(())
        },
    )
    .await;

    // Fire PBSBackupStale into Alertmanager, as the README shows.
    let posted = client
        .post(format!("{am}/api/v2/alerts"))
        .json(&json!([{
            "labels": {"alertname": "PBSBackupStale", "severity": "warning",
                       "datastore": "pbs-datastore", "backup_type": "vm", "backup_id": "451"},
            "annotations": {"summary": "PBS backup group vm/451 is stale"},
        }]))
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success());

    let run = common::eventually("a resolved run", Duration::from_secs(120), || async {
        let page = common::fetch_json(
            &client,
            &format!("{base}/api/v1/incidents?name=PBSBackupStale"),
            admin,
        )
        .await?;
        let incident = page["incidents"].as_array()?.first()?.clone();
        assert_eq!(incident["source"], "alertmanager");
        let id = incident["id"].as_i64()?;
        let detail =
            common::fetch_json(&client, &format!("{base}/api/v1/incidents/{id}"), admin).await?;
        let run_id = detail["runs"].as_array()?.first()?["run"]["id"].as_i64()?;
        let run =
            common::fetch_json(&client, &format!("{base}/api/v1/runs/{run_id}"), admin).await?;
        matches!(run["run"]["state"].as_str()?, "resolved" | "escalated").then_some(run)
    })
    .await;
    assert_eq!(run["run"]["state"], "resolved", "{run:#}");
    assert_eq!(run["run"]["outcome"]["cause"], "stale_nfs_handles");
}

/// The example env file exists and the real one is never committed.
#[test]
fn compose_tokens_come_from_an_uncommitted_env_file() {
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    assert!(example.contains("RUNBOOKD_ADMIN_TOKEN="));
    assert!(example.contains("RUNBOOKD_INGEST_TOKEN="));
    let ignored = Command::new("git")
        .args(["check-ignore", "--quiet", ".env"])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(ignored.success(), ".env must be ignored by git");
}
