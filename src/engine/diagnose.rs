//! Diagnosis: every read-only probe of a playbook, in parallel where `after` allows, then the
//! first cause whose condition is known to hold. Its wall time tracks the slowest probe of each
//! wave, not the sum. Nothing here changes the estate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::builtins;
use super::estate::Estate;
use super::facts::{self, ProbeResult};
use super::scope::{self, Scope};
use crate::exec::command::Value;
use crate::intake::Labels;
use crate::playbook::Playbook;
use crate::playbook::compiled::{Probe, ProbeKind};
use crate::playbook::model::{PbsRead, PveRead};
/// Beyond a probe's own timeout: time to connect.
const PROBE_GRACE: Duration = Duration::from_secs(5);

/// What one probe did, for the record (and the run's timeline picture).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub id: String,
    /// The exact command or request.
    pub request: String,
    pub ok: bool,
    pub exit: Option<u32>,
    pub error: Option<String>,
    /// When it started, in milliseconds after its diagnosis started (its wave's start).
    #[serde(default)]
    pub started_ms: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The cause that matched, or `None` for unknown (escalate with every fact).
    pub cause: Option<String>,
    /// The facts the cause's condition read, with their values.
    pub evidence: BTreeMap<String, Json>,
    pub facts: BTreeMap<String, Json>,
    /// Facts the playbook reports whatever the cause (decommissioned groups).
    pub report: BTreeMap<String, Json>,
    pub probes: Vec<ProbeRecord>,
    pub wall_ms: u64,
}

/// Diagnoses the alert with `labels` by `playbook` against `estate`.
pub async fn diagnose(
    playbook: &Playbook,
    estate: &Estate,
    labels: &Labels,
    now: DateTime<Utc>,
) -> Result<Diagnosis, String> {
    let started = Instant::now();
    let parameters = scope::parameters(playbook, estate, labels)?;
    let mut results: BTreeMap<String, ProbeResult> = BTreeMap::new();
    let mut records = Vec::new();
    let mut facts: BTreeMap<String, Json> = BTreeMap::new();
    let mut remaining: Vec<&Probe> = playbook.diagnose.iter().collect();
    while !remaining.is_empty() {
        let (ready, waiting): (Vec<&Probe>, Vec<&Probe>) = remaining
            .into_iter()
            .partition(|p| p.after.iter().all(|a| results.contains_key(a)));
        if ready.is_empty() {
            return Err("probes wait for each other in a cycle".to_owned());
        }
        let empty = BTreeMap::new();
        let scope = Scope {
            estate,
            playbook,
            parameters: &parameters,
            facts: &empty,
        };
        let wave_started_ms = started.elapsed().as_millis() as u64;
        let wave = join_all(
            ready
                .iter()
                .map(|probe| run_probe(probe, &scope, &results, now)),
        )
        .await;
        for (probe, (result, record)) in ready.iter().zip(wave) {
            for (name, extract) in &probe.facts {
                facts.insert(name.clone(), facts::extract(extract, &result));
            }
            records.push(ProbeRecord {
                started_ms: wave_started_ms,
                ..record
            });
            results.insert(probe.id.clone(), result);
        }
        remaining = waiting;
    }

    let mut cause = None;
    let mut evidence = BTreeMap::new();
    for candidate in &playbook.causes {
        let mut read = BTreeMap::new();
        if facts::evaluate(&candidate.when, &facts, &mut read) == Some(true) {
            cause = Some(candidate.id.clone());
            evidence = read;
            break;
        }
    }
    let report = playbook
        .report
        .iter()
        .map(|f| (f.clone(), facts.get(f).cloned().unwrap_or(Json::Null)))
        .collect();
    Ok(Diagnosis {
        cause,
        evidence,
        facts,
        report,
        probes: records,
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs one probe, bounded by its timeout (plus a little for connecting) however many safe
/// retries it takes.
pub(crate) async fn run_probe(
    probe: &Probe,
    scope: &Scope<'_>,
    earlier: &BTreeMap<String, ProbeResult>,
    now: DateTime<Utc>,
) -> (ProbeResult, ProbeRecord) {
    let started = Instant::now();
    let timeout = probe.timeout;
    let bound = timeout + PROBE_GRACE;
    let (result, request, error) =
        tokio::time::timeout(bound, probe_once(probe, scope, earlier, now, timeout))
            .await
            .unwrap_or_else(|_| {
                (
                    ProbeResult::default(),
                    probe.id.clone(),
                    Some(format!("no answer within {bound:?}")),
                )
            });
    let record = ProbeRecord {
        id: probe.id.clone(),
        request,
        ok: result.ok,
        exit: result.exit,
        error,
        started_ms: 0,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    (result, record)
}

/// Runs one probe, retrying what is safe to retry (a connection that never opened).
async fn probe_once(
    probe: &Probe,
    scope: &Scope<'_>,
    earlier: &BTreeMap<String, ProbeResult>,
    now: DateTime<Utc>,
    timeout: Duration,
) -> (ProbeResult, String, Option<String>) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_times(2);
    let estate = scope.estate;
    let (result, request, error) = match &probe.kind {
        ProbeKind::Ssh(ssh) => match (scope.host(&ssh.host), scope.fill(&ssh.run)) {
            (Ok(host), Ok(command)) => {
                let request = format!("{host}: {command}");
                let attempt = || estate.ssh.run(&host, &command, timeout);
                match attempt.retry(backoff).when(|e| e.is_retryable()).await {
                    Ok(out) => (
                        ProbeResult {
                            ok: true,
                            exit: Some(out.exit_status),
                            stdout: out.stdout,
                            data: Json::Null,
                        },
                        request,
                        None,
                    ),
                    Err(e) => (ProbeResult::default(), request, Some(e.to_string())),
                }
            }
            (Err(e), _) | (_, Err(e)) => (ProbeResult::default(), probe.id.clone(), Some(e)),
        },
        ProbeKind::Pbs(read) => {
            let read = *read;
            let datastore = match scope.parameters.get("datastore") {
                Some(Value::Name(name)) => name.clone(),
                _ => estate.pbs_target.datastore.clone(),
            };
            let request = format!("PBS {read:?}");
            let answer = tokio::time::timeout(timeout, async {
                let call = || async {
                    match read {
                        PbsRead::Version => estate.pbs.version().await.map(|v| json!(v)),
                        PbsRead::Datastores => estate.pbs.datastores().await.map(|v| json!(v)),
                        PbsRead::DatastoreUsage => {
                            estate.pbs.datastore_usage().await.map(|v| json!(v))
                        }
                        PbsRead::BackupTasks => {
                            estate.pbs.backup_tasks(&datastore).await.map(|v| json!(v))
                        }
                    }
                };
                call.retry(backoff)
                    .when(|e| e.is_retryable())
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            api_result(answer, request)
        }
        ProbeKind::Pve(read) => {
            let read = *read;
            let request = format!("PVE {read:?}");
            let answer = tokio::time::timeout(timeout, async {
            let call = || async {
                match read {
                    PveRead::Storage => estate.pve.storage(&estate.pve_target.storage).await.map(|v| json!(v)),
                    PveRead::BackupJobs => estate.pve.backup_jobs().await.map(|v| json!(v)),
                    PveRead::Guests => {
                        let mut all = Vec::new();
                        for node in &estate.pve_nodes {
                            all.push(json!({"node": node.as_str(), "qemu": estate.pve.qemu(node).await?, "lxc": estate.pve.lxc(node).await?}));
                        }
                        Ok(Json::Array(all))
                    }
                }
            };
            call.retry(backoff).when(|e| e.is_retryable()).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            api_result(answer, request)
        }
        ProbeKind::Builtin(builtin) => {
            let builtin = *builtin;
            let bounded = tokio::time::timeout(
                timeout,
                builtins::run(builtin, scope, earlier, now, timeout),
            )
            .await;
            let result = bounded.unwrap_or_else(|_| ProbeResult {
                data: json!({"error": format!("no answer within {timeout:?}")}),
                ..Default::default()
            });
            let error =
                (!result.ok).then(|| result.data["error"].as_str().unwrap_or("failed").to_owned());
            (result, format!("builtin {builtin:?}"), error)
        }
    };
    (result, request, error)
}

fn api_result(
    answer: Result<Json, String>,
    request: String,
) -> (ProbeResult, String, Option<String>) {
    match answer {
        Ok(data) => (
            ProbeResult {
                ok: true,
                exit: None,
                stdout: String::new(),
                data,
            },
            request,
            None,
        ),
        Err(error) => (ProbeResult::default(), request, Some(error)),
    }
}
