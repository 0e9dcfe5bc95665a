//! Recording a delivery: the raw body, its alerts, and the incidents they open, dedupe into or
//! resolve, all in one transaction. Either the whole delivery is stored or none of it.
//!
//! Dedupe is one `INSERT … ON CONFLICT … DO UPDATE … RETURNING` against the partial unique index
//! on open incidents, so concurrent identical alerts cannot open two incidents and every one of
//! them is counted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::types::Json;

use super::audit::{self, AuditAction, NewAuditEvent};
use super::{Store, StoreError};
use crate::auth::Principal;
use crate::intake::{Alert, AlertStatus, Delivery};

/// What recording one alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntakeAction {
    Opened,
    Deduplicated,
    Resolved,
    /// A resolve for which no incident was open: recorded, nothing changed.
    ResolveUnmatched,
}

impl IntakeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Deduplicated => "deduplicated",
            Self::Resolved => "resolved",
            Self::ResolveUnmatched => "resolve_unmatched",
        }
    }

    fn audit_action(self) -> AuditAction {
        match self {
            Self::Opened => AuditAction::IncidentOpened,
            Self::Deduplicated => AuditAction::IncidentDeduplicated,
            Self::Resolved => AuditAction::IncidentSourceResolved,
            Self::ResolveUnmatched => AuditAction::ResolveUnmatched,
        }
    }
}

/// The result for one alert of a delivery, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeOutcome {
    pub incident_id: Option<i64>,
    pub action: IntakeAction,
}

impl Store {
    /// Stores a validated delivery. `raw_body` is kept verbatim.
    pub async fn record_delivery(
        &self,
        delivery: &Delivery,
        raw_body: &str,
        actor: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<IntakeOutcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let delivery_id: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (received_at, source, actor, body) VALUES (?, ?, ?, ?)
             RETURNING id",
        )
        .bind(now)
        .bind(delivery.source.as_str())
        .bind(&actor.name)
        .bind(raw_body)
        .fetch_one(&mut *tx)
        .await?;

        let mut outcomes = Vec::with_capacity(delivery.alerts.len());
        for alert in &delivery.alerts {
            let (incident_id, action) = match alert.status {
                AlertStatus::Firing => {
                    let (id, count): (i64, i64) = sqlx::query_as(
                        "INSERT INTO incidents
                           (fingerprint, name, source, severity, labels, status, alert_count,
                            first_seen, last_seen)
                         VALUES (?, ?, ?, ?, ?, 'open', 1, ?, ?)
                         ON CONFLICT (fingerprint) WHERE status = 'open'
                         DO UPDATE SET alert_count = alert_count + 1, last_seen = excluded.last_seen
                         RETURNING id, alert_count",
                    )
                    .bind(alert.fingerprint.as_str())
                    .bind(alert.name.as_str())
                    .bind(alert.source.as_str())
                    .bind(alert.severity.as_str())
                    .bind(Json(&alert.labels))
                    .bind(now)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let action = if count == 1 {
                        IntakeAction::Opened
                    } else {
                        IntakeAction::Deduplicated
                    };
                    (Some(id), action)
                }
                AlertStatus::Resolved => {
                    let id: Option<i64> = sqlx::query_scalar(
                        "UPDATE incidents SET status = 'resolved', resolved_at = ?, last_seen = ?
                         WHERE fingerprint = ? AND status = 'open'
                         RETURNING id",
                    )
                    .bind(now)
                    .bind(now)
                    .bind(alert.fingerprint.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    match id {
                        Some(id) => (Some(id), IntakeAction::Resolved),
                        None => (None, IntakeAction::ResolveUnmatched),
                    }
                }
            };
            let alert_id = insert_alert(&mut tx, alert, delivery_id, incident_id, now).await?;
            audit::append(
                &mut tx,
                now,
                NewAuditEvent {
                    actor: &actor.name,
                    action: action.audit_action(),
                    incident_id,
                    run_id: None,
                    detail: json!({
                    "delivery_id": delivery_id,
                    "alert_id": alert_id,
                    "source": alert.source,
                    "alert_name": alert.name,
                    "fingerprint": alert.fingerprint,
                    "status": alert.status,
                    }),
                },
            )
            .await?;
            outcomes.push(IntakeOutcome {
                incident_id,
                action,
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

async fn insert_alert(
    tx: &mut sqlx::SqliteConnection,
    alert: &Alert,
    delivery_id: i64,
    incident_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO alerts
           (delivery_id, incident_id, source, name, severity, status, fingerprint, labels,
            annotations, starts_at, ends_at, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING id",
    )
    .bind(delivery_id)
    .bind(incident_id)
    .bind(alert.source.as_str())
    .bind(alert.name.as_str())
    .bind(alert.severity.as_str())
    .bind(alert.status.as_str())
    .bind(alert.fingerprint.as_str())
    .bind(Json(&alert.labels))
    .bind(Json(&alert.annotations))
    .bind(alert.starts_at)
    .bind(alert.ends_at)
    .bind(now)
    .fetch_one(tx)
    .await
}
