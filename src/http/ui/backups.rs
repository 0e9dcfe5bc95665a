//! `/backups`: each backup group's age as a bar against the playbook's threshold, from the same
//! [`crate::http::backups::status`] as the `get_backup_status` tool and `GET /api/v1/backups`.
//! The bars are inline SVG sized by attributes and coloured by the stylesheet's classes, so the
//! page needs neither script nor inline style.

use maud::{Markup, html};

use super::pages::{at, badge, layout};
use super::{PageError, Viewer};
use crate::http::AppState;
use crate::http::backups::{BackupQuery, BackupStatus, Freshness, GroupStatus};

/// A bar's full length is this many thresholds: the threshold sits at its middle, and older
/// groups fill it.
const SCALE_THRESHOLDS: f64 = 2.0;
/// The bar's drawing width in SVG units (it stretches to the page's width).
const BAR_UNITS: f64 = 100.0;

pub async fn page(state: &AppState, viewer: &Viewer) -> Result<Markup, PageError> {
    let status = crate::http::backups::status(state, &BackupQuery::default(), "backups").await?;
    Ok(layout("Backups", Some(viewer), body(&status)))
}

fn body(status: &BackupStatus) -> Markup {
    let count = |freshness: Freshness| {
        status
            .groups
            .iter()
            .filter(|g| g.freshness == freshness)
            .count()
    };
    html! {
        h1 { "Backups" }
        p.meta {
            "Datastore " strong { (status.datastore) } " · a group is stale after "
            strong { (status.stale_after_hours) " h" } " (" (status.playbook) "'s stale_after_hours)"
        }
        p.backup-counts {
            span.ok { (count(Freshness::Fresh)) " fresh" } " · "
            span.bad { (count(Freshness::Stale)) " stale" } " · "
            span.decommissioned-count { (count(Freshness::Decommissioned)) " decommissioned" }
        }
        @if status.groups.is_empty() {
            p.empty { "PBS lists no backup group in this datastore." }
        }
        ul.backups {
            @for group in &status.groups {
                (group_item(group, status.stale_after_hours))
            }
        }
    }
}

fn group_item(group: &GroupStatus, threshold: u64) -> Markup {
    let freshness = group.freshness.as_str();
    html! {
        li.backup.(freshness) id=(format!("group-{}", group.group.replace('/', "-"))) {
            div.backup-head {
                strong.group { (group.group) }
                " " (badge(freshness))
                span.age { (hours(group.age_hours)) " / " (threshold) " h" }
            }
            (age_bar(group, threshold))
            p.meta {
                @match group.last_backup {
                    Some(last) => { "last backup " (at(last)) },
                    None => "never backed up",
                }
                " · " (group.backup_count) " snapshot(s)"
                @if group.freshness == Freshness::Decommissioned {
                    " · decommissioned: its guest is gone, its age is expected"
                }
            }
            p.meta {
                @match &group.last_run {
                    Some(run) => {
                        "last worked on by "
                        a href=(format!("/runs/{}", run.run_id)) { "run #" (run.run_id) }
                        @if let Some(incident) = run.incident_id {
                            " of " a href=(format!("/incidents/{incident}")) { "incident #" (incident) }
                        }
                        " " (badge(run.state.as_str())) " at " (at(run.created_at))
                    },
                    None => "no run has worked on it",
                }
            }
        }
    }
}

/// The age as a bar on a scale of [`SCALE_THRESHOLDS`] thresholds, with the threshold marked.
fn age_bar(group: &GroupStatus, threshold: u64) -> Markup {
    let full = threshold.max(1) as f64 * SCALE_THRESHOLDS;
    let filled = (group.age_hours.max(0.0) / full).min(1.0) * BAR_UNITS;
    let mark = BAR_UNITS / SCALE_THRESHOLDS;
    let label = format!(
        "{} old against a threshold of {threshold} h: {}",
        hours(group.age_hours),
        group.freshness.as_str()
    );
    html! {
        svg.age-bar viewBox=(format!("0 0 {BAR_UNITS} 10")) preserveAspectRatio="none"
            role="img" aria-label=(label) {
            title { (label) }
            rect.track x="0" y="0" width=(BAR_UNITS) height="10" {}
            rect.(format!("fill-{}", group.freshness.as_str())) x="0" y="0" width=(format!("{filled:.2}")) height="10" {}
            line.threshold x1=(mark) y1="0" x2=(mark) y2="10" {}
        }
    }
}

/// `61 h`, `3.5 h`, `212 d`.
fn hours(age: f64) -> String {
    if age >= 24.0 * 14.0 {
        format!("{:.0} d", age / 24.0)
    } else if age >= 10.0 {
        format!("{age:.0} h")
    } else {
        format!("{age:.1} h")
    }
}
