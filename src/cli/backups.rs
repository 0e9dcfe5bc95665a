//! `runbookd backups`: every backup group's age against the playbook's threshold, as a bar of
//! text, from `GET /api/v1/backups` (the same source as the `/backups` page).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::render::{Paint, ago, table, table_text, time};

/// A bar is this many cells wide; it spans two thresholds, so the threshold is at its middle.
const BAR_CELLS: usize = 16;
const SCALE_THRESHOLDS: f64 = 2.0;

/// `GET /api/v1/backups`.
#[derive(Debug, Clone, Deserialize)]
pub struct BackupStatus {
    pub datastore: String,
    #[serde(default)]
    pub playbook: String,
    pub stale_after_hours: u64,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub group: String,
    pub last_backup: Option<DateTime<Utc>>,
    pub age_hours: f64,
    pub freshness: String,
    #[serde(default)]
    pub backup_count: u64,
    #[serde(default)]
    pub last_run: Option<GroupRun>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupRun {
    pub run_id: i64,
    pub incident_id: Option<i64>,
    pub state: String,
}

/// The groups in the service's order (stale, fresh, decommissioned): `vm/451  ██████████░░░░░░  61h / 48h
/// stale  ...`.
pub fn render(status: &BackupStatus, now: DateTime<Utc>, paint: Paint) -> String {
    let mut out = format!(
        "datastore {}: a group is stale after {} h ({}'s stale_after_hours)\n",
        status.datastore, status.stale_after_hours, status.playbook
    );
    if status.groups.is_empty() {
        out.push_str("no backup groups\n");
        return out;
    }
    let mut t = table(&[
        "GROUP",
        "AGE",
        "AGE / THRESHOLD",
        "STATE",
        "LAST BACKUP",
        "RUN",
    ]);
    for g in &status.groups {
        t.add_row(vec![
            g.group.clone(),
            bar(g.age_hours, status.stale_after_hours),
            format!("{} / {}h", hours(g.age_hours), status.stale_after_hours),
            g.freshness.clone(),
            format!("{} ({})", time(g.last_backup), ago(g.last_backup, now)),
            match &g.last_run {
                Some(run) => match run.incident_id {
                    Some(incident) => format!("{} {} (incident {incident})", run.run_id, run.state),
                    None => format!("{} {}", run.run_id, run.state),
                },
                None => "-".to_owned(),
            },
        ]);
    }
    let text = table_text(&t, paint);
    // Colour the state word once the columns are aligned, so escapes cannot shift them.
    for line in text.lines() {
        let coloured = ["fresh", "stale"]
            .iter()
            .find(|word| line.contains(&format!("  {word}  ")))
            .map(|word| {
                line.replacen(
                    &format!("  {word}  "),
                    &format!("  {}  ", paint.state(word)),
                    1,
                )
            });
        out.push_str(&coloured.unwrap_or_else(|| line.to_owned()));
        out.push('\n');
    }
    let count = |word: &str| status.groups.iter().filter(|g| g.freshness == word).count();
    out.push_str(&format!(
        "{} fresh, {} stale, {} decommissioned\n",
        count("fresh"),
        count("stale"),
        count("decommissioned")
    ));
    out
}

/// The age in full blocks on a scale of two thresholds: `████████░░░░░░░░` is exactly at it.
fn bar(age_hours: f64, threshold: u64) -> String {
    let full = threshold.max(1) as f64 * SCALE_THRESHOLDS;
    let filled = ((age_hours.max(0.0) / full).min(1.0) * BAR_CELLS as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR_CELLS - filled))
}

/// `61h`, `3.5h`, `212d`.
fn hours(age: f64) -> String {
    if age >= 24.0 * 14.0 {
        format!("{:.0}d", age / 24.0)
    } else if age >= 10.0 {
        format!("{age:.0}h")
    } else {
        format!("{age:.1}h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_full_at_twice_the_threshold_and_half_at_it() {
        assert_eq!(bar(0.0, 48), "░".repeat(16));
        assert_eq!(bar(48.0, 48), format!("{}{}", "█".repeat(8), "░".repeat(8)));
        assert_eq!(
            bar(61.0, 48),
            format!("{}{}", "█".repeat(10), "░".repeat(6))
        );
        assert_eq!(bar(5000.0, 48), "█".repeat(16));
    }
}
