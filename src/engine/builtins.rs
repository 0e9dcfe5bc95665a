//! Probes whose logic is code: they read several sources and compute one JSON result.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value as Json, json};

use super::facts::ProbeResult;
use super::scope::Scope;
use crate::exec::command::{Name, Value, Vmid, render};
use crate::playbook::model::Builtin;

/// Runs a builtin probe. `earlier` holds the results of the probes it waited for.
pub async fn run(
    builtin: Builtin,
    scope: &Scope<'_>,
    earlier: &BTreeMap<String, ProbeResult>,
    now: DateTime<Utc>,
    timeout: Duration,
) -> ProbeResult {
    let data = match builtin {
        Builtin::StaleGroups => stale_groups(scope, now).await,
        Builtin::VzdumpLogs => vzdump_logs(scope, earlier, now, timeout).await,
        Builtin::VzdumpRunning => vzdump_running(scope).await,
    };
    match data {
        Ok(data) => ProbeResult {
            ok: true,
            exit: None,
            stdout: String::new(),
            data,
        },
        Err(error) => ProbeResult {
            ok: false,
            data: json!({"error": error}),
            ..Default::default()
        },
    }
}

/// Where each guest lives: `(type, vmid)` → host, from every PVE node's guest lists, asked
/// in parallel.
async fn guest_homes(scope: &Scope<'_>) -> Result<BTreeMap<(String, u32), String>, String> {
    let pve = &scope.estate.pve;
    let lists = futures::future::join_all(scope.estate.pve_nodes.iter().map(|node| async move {
        let (qemu, lxc) = tokio::join!(pve.qemu(node), pve.lxc(node));
        Ok::<_, String>((
            node,
            qemu.map_err(|e| e.to_string())?,
            lxc.map_err(|e| e.to_string())?,
        ))
    }))
    .await;
    let mut homes = BTreeMap::new();
    for list in lists {
        let (node, qemu, lxc) = list?;
        for g in qemu {
            homes.insert(("vm".to_owned(), g.vmid), node.to_string());
        }
        for g in lxc {
            homes.insert(("ct".to_owned(), g.vmid), node.to_string());
        }
    }
    Ok(homes)
}

/// Groups older than `stale_after_hours`, split into `active` (the guest lives on a PVE host)
/// and `decommissioned` (listed in settings, or on no host). When PBS cannot list its groups
/// (the datastore is gone), the alert's own group stands in, marked `from_alert`.
async fn stale_groups(scope: &Scope<'_>, now: DateTime<Utc>) -> Result<Json, String> {
    let hours = i64::from(scope.playbook.backups.stale_after_hours);
    let listed = &scope.playbook.backups.decommissioned;
    let homes = guest_homes(scope).await?;
    let datastore = match scope.parameters.get("datastore") {
        Some(Value::Name(name)) => name.clone(),
        _ => scope.estate.pbs_target.datastore.clone(),
    };
    let (groups, groups_error) = match scope.estate.pbs.groups(&datastore).await {
        Ok(groups) => (
            groups
                .into_iter()
                .map(|g| (g.backup_type, g.backup_id, Some(g.last_backup)))
                .collect::<Vec<_>>(),
            None,
        ),
        Err(error) => {
            let alert_group = match (
                scope.parameters.get("backup_type"),
                scope.parameters.get("backup_id"),
            ) {
                (Some(Value::Name(kind)), Some(Value::Vmid(id))) => {
                    vec![(kind.to_string(), id.to_string(), None)]
                }
                _ => Vec::new(),
            };
            (alert_group, Some(error.to_string()))
        }
    };
    let mut active = Vec::new();
    let mut decommissioned = Vec::new();
    for (kind, id, last) in groups {
        let age_hours = last.map(|last| (now.timestamp() - last) / 3600);
        if age_hours.is_some_and(|age| age < hours) {
            continue;
        }
        let group = format!("{kind}/{id}");
        let home = id
            .parse::<u32>()
            .ok()
            .and_then(|vmid| homes.get(&(kind.clone(), vmid)));
        match home {
            Some(host) if !listed.contains(&group) => active.push(json!({
                "group": group, "type": kind, "vmid": id.parse::<u32>().ok(), "host": host,
                "age_hours": age_hours, "from_alert": last.is_none(),
            })),
            _ => decommissioned.push(Json::String(group)),
        }
    }
    Ok(
        json!({"datastore": datastore.as_str(), "active": active, "decommissioned": decommissioned, "stale_after_hours": hours, "groups_error": groups_error}),
    )
}

/// Classifies one per-guest vzdump log (reference/host-outputs.md).
pub fn classify_log(log: &str, last_run: Option<DateTime<Utc>>) -> &'static str {
    let first = log
        .lines()
        .next()
        .and_then(|l| l.get(..19))
        .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok());
    // A job that failed before reaching the guest leaves the previous run's file.
    let stale = match (first, last_run) {
        (Some(first), Some(last_run)) => first.and_utc() < last_run - chrono::Duration::hours(1),
        _ => false,
    };
    if log.contains("unable to open chunk store")
        && (log.contains("(os error 2)") || log.contains("(os error 116)"))
        && !stale
    {
        "chunk_store"
    } else if (log.contains("fingerprint") || log.contains("certificate validation failed"))
        && !stale
    {
        "fingerprint"
    } else if stale {
        "stale_file"
    } else if log.contains("ERROR:") {
        "other"
    } else {
        "ok"
    }
}

/// Each stale active guest's log on its host, classified.
async fn vzdump_logs(
    scope: &Scope<'_>,
    earlier: &BTreeMap<String, ProbeResult>,
    now: DateTime<Utc>,
    timeout: Duration,
) -> Result<Json, String> {
    let active = earlier
        .values()
        .find_map(|r| r.data.get("active").and_then(|a| a.as_array()).cloned())
        .ok_or("the stale groups are not known")?;
    let last_run = scope.playbook.backups.last_scheduled(now);
    let mut classes = BTreeSet::new();
    let mut guests = Vec::new();
    for guest in active {
        let (Some(host), Some(vmid), Some(kind)) = (
            guest["host"].as_str(),
            guest["vmid"].as_u64(),
            guest["type"].as_str(),
        ) else {
            continue;
        };
        let prefix = if kind == "ct" { "lxc" } else { "qemu" };
        let vmid = Vmid::new(vmid as u32).map_err(|e| e.to_string())?;
        let template = format!("tail -n 50 /var/log/vzdump/{prefix}-{{vmid}}.log");
        let command =
            render(&template, &[("vmid", Value::Vmid(vmid))]).map_err(|e| e.to_string())?;
        let host_name = Name::parse(host).map_err(|e| e.to_string())?;
        let class = match scope.estate.ssh.run(&host_name, &command, timeout).await {
            Ok(out) if out.exit_status == 0 => classify_log(&out.stdout, last_run),
            Ok(_) => "no_log",
            Err(_) => "unreadable",
        };
        classes.insert(class);
        guests.push(json!({"group": guest["group"], "host": host, "class": class}));
    }
    Ok(json!({"classes": classes, "guests": guests}))
}

/// Whether a vzdump task runs on any PVE host now.
async fn vzdump_running(scope: &Scope<'_>) -> Result<Json, String> {
    let mut tasks = Vec::new();
    for node in &scope.estate.pve_nodes {
        let running = scope
            .estate
            .pve
            .running_vzdump_tasks(node)
            .await
            .map_err(|e| e.to_string())?;
        tasks.extend(
            running
                .into_iter()
                .map(|t| json!({"node": node.as_str(), "upid": t.upid, "id": t.id})),
        );
    }
    Ok(json!({"running": !tasks.is_empty(), "tasks": tasks}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn logs_are_classified_as_the_reference_prints_them() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap();
        let schedule = crate::playbook::compiled::BackupSettings {
            schedule: chrono::NaiveTime::from_hms_opt(2, 0, 0),
            ..Default::default()
        };
        let last_run = schedule.last_scheduled(now);
        let chunk = "2026-11-26 02:00:03 INFO: Starting Backup of VM 451 (qemu)\n2026-11-26 02:00:04 ERROR: Backup of VM 451 failed - VM 451 qmp command 'backup' failed - backup connect failed: command error: unable to open chunk store at \"/mnt/pbs-datastore/.chunks\" - No such file or directory (os error 2)\n";
        assert_eq!(classify_log(chunk, last_run), "chunk_store");
        assert_eq!(
            classify_log(
                &chunk.replace(
                    "No such file or directory (os error 2)",
                    "Stale file handle (os error 116)"
                ),
                last_run
            ),
            "chunk_store"
        );
        let old_success = "2026-11-24 02:00:04 INFO: Starting Backup of VM 451 (qemu)\n2026-11-24 02:00:08 INFO: Finished Backup of VM 451 (00:00:04)\n";
        assert_eq!(classify_log(old_success, last_run), "stale_file");
        let fresh_success = old_success.replace("2026-11-24", "2026-11-26");
        assert_eq!(classify_log(&fresh_success, last_run), "ok");
        assert_eq!(
            classify_log(
                "2026-11-26 02:00:02 ERROR: Backup of CT 101 failed - exit code 255\n",
                last_run
            ),
            "other"
        );
    }
}
