//! `/runs/{id}`: one run on its own, as the incident page shows it (its picture, steps and
//! approvals), with the run's own audit trail. Runs started by hand have no incident; this is
//! where their picture is.

use axum::http::StatusCode;
use maud::{Markup, html};

use super::pages::{layout, run_section, timeline_list};
use super::{PageError, Viewer};
use crate::http::AppState;

/// As many trail events as the incident page shows.
const TIMELINE_EVENTS: u32 = 1000;

pub async fn page(state: &AppState, viewer: &Viewer, id: i64) -> Result<Markup, PageError> {
    let store = &state.store;
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("There is no run {id}.")))?;
    let steps = store.step_attempts(id).await?;
    let approvals = store.approvals_for_run(id).await?;
    let timeline = store.run_timeline(id, TIMELINE_EVENTS).await?;
    Ok(layout(
        &format!("Run {id}"),
        Some(viewer),
        html! {
            p.crumbs {
                a href="/" { "← All incidents" }
                @if let Some(incident) = run.incident_id {
                    " · " a href=(format!("/incidents/{incident}")) { "incident #" (incident) }
                }
            }
            (run_section(&run, &steps, &approvals, viewer, state.clock.now()))
            h2 { "Timeline" }
            (timeline_list(&timeline))
        },
    ))
}
