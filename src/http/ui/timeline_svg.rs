//! A run as a picture: each diagnosis probe, each wait for an approval and each step attempt a
//! bar on one time axis, in time order, its width proportional to how long it took and its
//! colour (a stylesheet class) saying how it ended. Inline SVG sized by attributes: the page's
//! CSP (`default-src 'none'; style-src 'self'`) needs nothing more, and there is no script.
//! The same facts are in the SVG's `<title>` and `<desc>` as words, for screen readers.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::engine::worker::Progress;
use crate::store::approvals::{Approval, ApprovalStatus};
use crate::store::runs::{Run, StepAttempt};

/// The drawing's width in SVG units; it stretches to the column's width.
const WIDTH: f64 = 360.0;
/// One bar's row: its label above, then the bar.
const ROW: f64 = 30.0;
const BAR_TOP: f64 = 15.0;
const BAR_HEIGHT: f64 = 10.0;
/// Room under the rows for the axis and its two times.
const AXIS: f64 = 26.0;

/// What a bar stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Probe,
    Approval,
    Step,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Approval => "approval",
            Self::Step => "step",
        }
    }
}

/// How a bar's span ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    /// Still going: a step in flight, an approval nobody decided yet.
    Open,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone)]
struct Bar {
    kind: Kind,
    name: String,
    start: DateTime<Utc>,
    duration_ms: i64,
    outcome: Outcome,
    /// How it ended, in words: "exit 0", "approved by alice", "no answer within 10s".
    note: String,
    /// Ties in time keep the order things were recorded in.
    order: i64,
}

/// The run's picture, or nothing when nothing has happened yet.
pub fn picture(
    run: &Run,
    steps: &[StepAttempt],
    approvals: &[Approval],
    now: DateTime<Utc>,
) -> Markup {
    let bars = bars(run, steps, approvals, now);
    let (Some(first), Some(last)) = (
        bars.iter().map(|b| b.start).min(),
        bars.iter().map(end).max(),
    ) else {
        return html! {};
    };
    let span_ms = (last - first).num_milliseconds().max(1) as f64;
    let scale = WIDTH / span_ms;
    let height = bars.len() as f64 * ROW + AXIS;
    let title_id = format!("run-{}-picture-title", run.id);
    let desc_id = format!("run-{}-picture-desc", run.id);
    let title = format!(
        "Run #{} over time: {} probe(s), {} approval wait(s), {} step attempt(s) in {}",
        run.id,
        bars.iter().filter(|b| b.kind == Kind::Probe).count(),
        bars.iter().filter(|b| b.kind == Kind::Approval).count(),
        bars.iter().filter(|b| b.kind == Kind::Step).count(),
        duration(span_ms as i64)
    );
    html! {
        figure.run-picture {
            svg.run-timeline viewBox=(format!("0 0 {WIDTH} {height}")) role="img"
                aria-labelledby=(format!("{title_id} {desc_id}")) {
                title id=(title_id) { (title) }
                desc id=(desc_id) {
                    @for bar in &bars { (sentence(bar, first)) " " }
                }
                @for (row, bar) in bars.iter().enumerate() {
                    @let y = row as f64 * ROW;
                    @let x = (bar.start - first).num_milliseconds() as f64 * scale;
                    @let width = bar.duration_ms as f64 * scale;
                    g class=(format!("span {} {}", bar.kind.as_str(), bar.outcome.as_str())) {
                        title { (sentence(bar, first)) }
                        @let (label_x, anchor) = if x < WIDTH * 0.55 { (x, "start") } else { (x + width, "end") };
                        text.label x=(coordinate(label_x)) y=(coordinate(y + BAR_TOP - 3.0)) text-anchor=(anchor) {
                            (label(bar))
                        }
                        line.tick x1=(coordinate(x)) y1=(coordinate(y + BAR_TOP)) x2=(coordinate(x)) y2=(coordinate(y + BAR_TOP + BAR_HEIGHT)) {}
                        rect.bar x=(coordinate(x)) y=(coordinate(y + BAR_TOP)) width=(coordinate(width)) height=(BAR_HEIGHT) {}
                    }
                }
                @let axis_y = bars.len() as f64 * ROW + 4.0;
                line.axis x1="0" y1=(coordinate(axis_y)) x2=(WIDTH) y2=(coordinate(axis_y)) {}
                text.axis-label x="0" y=(coordinate(axis_y + 14.0)) text-anchor="start" { (first.format("%H:%M:%S UTC").to_string()) }
                text.axis-label x=(WIDTH) y=(coordinate(axis_y + 14.0)) text-anchor="end" { "+" (duration(span_ms as i64)) }
            }
            figcaption.meta {
                "Each bar is a probe, a wait for approval or a step, as long as it took. "
                span.key-ok { "■ ok" } " " span.key-failed { "■ failed" } " " span.key-open { "■ still open" }
            }
        }
    }
}

/// Every probe, approval wait and step attempt of the run, in time order.
fn bars(run: &Run, steps: &[StepAttempt], approvals: &[Approval], now: DateTime<Utc>) -> Vec<Bar> {
    let mut bars = Vec::new();
    // Progress that cannot be read has no probes to draw; the run's page says why elsewhere.
    if let Ok(progress) = Progress::decode(&run.facts.0)
        && let Some(diagnosed_at) = progress.diagnosed_at
    {
        for (n, probe) in progress.probes.iter().enumerate() {
            let failed = !probe.ok || probe.error.is_some();
            bars.push(Bar {
                kind: Kind::Probe,
                name: probe.id.clone(),
                start: diagnosed_at + chrono::Duration::milliseconds(probe.started_ms as i64),
                duration_ms: probe.duration_ms as i64,
                outcome: if failed { Outcome::Failed } else { Outcome::Ok },
                note: match (&probe.error, probe.exit) {
                    (Some(error), _) => error.clone(),
                    (None, Some(exit)) => format!("answered, exit {exit}"),
                    (None, None) => "answered".to_owned(),
                },
                order: n as i64,
            });
        }
    }
    for approval in approvals {
        let (end, outcome) = match (approval.status, approval.decided_at) {
            (ApprovalStatus::Pending, _) | (_, None) => {
                (now.min(approval.expires_at), Outcome::Open)
            }
            (ApprovalStatus::Approved, Some(at)) => (at, Outcome::Ok),
            (_, Some(at)) => (at, Outcome::Failed),
        };
        let status = super::pages::approval_status_str(approval.status);
        bars.push(Bar {
            kind: Kind::Approval,
            name: approval.step.clone(),
            start: approval.requested_at,
            duration_ms: (end - approval.requested_at).num_milliseconds().max(0),
            outcome,
            note: match &approval.decided_by {
                Some(by) => format!("{status} by {by}"),
                None => status.to_owned(),
            },
            order: approval.id,
        });
    }
    for step in steps {
        let outcome = match (step.status.as_str(), &step.error) {
            ("started", _) => Outcome::Open,
            (_, Some(_)) => Outcome::Failed,
            _ => Outcome::Ok,
        };
        let duration_ms = step.duration_ms.unwrap_or_else(|| {
            (step.finished_at.unwrap_or(now) - step.started_at)
                .num_milliseconds()
                .max(0)
        });
        bars.push(Bar {
            kind: Kind::Step,
            name: step.step.clone(),
            start: step.started_at,
            duration_ms,
            outcome,
            note: match (&step.error, step.exit_status) {
                (Some(error), _) => error.clone(),
                (None, Some(exit)) => format!("exit {exit}"),
                (None, None) if outcome == Outcome::Open => "still running".to_owned(),
                (None, None) => "done".to_owned(),
            },
            order: step.id,
        });
    }
    bars.sort_by_key(|b| (b.start, b.kind, b.order));
    bars
}

fn end(bar: &Bar) -> DateTime<Utc> {
    bar.start + chrono::Duration::milliseconds(bar.duration_ms)
}

/// The bar's short label: `step restart_pbs · 1.2 s`.
fn label(bar: &Bar) -> String {
    format!(
        "{} {} · {}",
        bar.kind.as_str(),
        bar.name,
        duration(bar.duration_ms)
    )
}

/// The bar in words, for the `<desc>` and the bar's tooltip.
fn sentence(bar: &Bar, first: DateTime<Utc>) -> String {
    let what = match bar.kind {
        Kind::Probe => format!("Probe {}", bar.name),
        Kind::Approval => format!("Wait for approval of {}", bar.name),
        Kind::Step => format!("Step {}", bar.name),
    };
    format!(
        "{what} started {} in, took {} and ended {}: {}.",
        duration((bar.start - first).num_milliseconds()),
        duration(bar.duration_ms),
        match bar.outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Open => "not yet",
        },
        bar.note
    )
}

/// An SVG coordinate, to a thousandth of a unit.
fn coordinate(value: f64) -> String {
    format!("{value:.3}")
}

fn duration(ms: i64) -> String {
    match ms {
        ..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}
