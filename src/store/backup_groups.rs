//! Which run last worked on each backup group, for the backups page, `runbookd backups` and
//! the `get_backup_status` tool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;

use super::runs::RunState;
use super::{Store, StoreError};

/// A run that worked on a backup group.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct GroupRun {
    pub run_id: i64,
    /// The incident that started it; none for a run started by hand.
    pub incident_id: Option<i64>,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct Touched {
    grp: String,
    #[sqlx(flatten)]
    run: GroupRun,
}

impl Store {
    /// For each backup group (`vm/451`), the newest run that worked on it: its alert named the
    /// group (labels `backup_type` and `backup_id` or `vm_id`), or its diagnosis found the group
    /// stale (`stale_active`, `stale_decommissioned`). Dry runs count: they looked at it too.
    pub async fn runs_by_backup_group(&self) -> Result<BTreeMap<String, GroupRun>, StoreError> {
        let rows: Vec<Touched> = sqlx::query_as(
            "WITH valid AS (SELECT id, facts FROM runs WHERE json_valid(facts)),
             touched(run_id, grp) AS (
                 SELECT id, json_extract(facts, '$.labels.backup_type') || '/' ||
                            coalesce(json_extract(facts, '$.labels.backup_id'),
                                     json_extract(facts, '$.labels.vm_id'))
                 FROM valid
                 UNION
                 SELECT v.id, json_extract(g.value, '$.group')
                 FROM valid v, json_each(v.facts, '$.facts.stale_active') g
                 WHERE g.type = 'object'
                 UNION
                 SELECT v.id, g.value
                 FROM valid v, json_each(v.facts, '$.facts.stale_decommissioned') g
                 WHERE g.type = 'text'
             ),
             latest AS (SELECT grp, max(run_id) AS run_id FROM touched
                        WHERE grp IS NOT NULL GROUP BY grp)
             SELECT latest.grp, runs.id AS run_id, runs.incident_id, runs.state, runs.created_at
             FROM latest JOIN runs ON runs.id = latest.run_id",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|t| (t.grp, t.run)).collect())
    }
}
