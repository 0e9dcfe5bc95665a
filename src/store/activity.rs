//! What `/metrics` reads from the database as it is scraped: runs under way, approvals waiting
//! and runs ended. Counted from the tables rather than kept in memory, so the figures are right
//! after a restart and cannot drift from what the database holds.

use super::runs::RunState;
use super::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Runs pending, running or waiting for an approval.
    pub runs_active: u64,
    pub approvals_pending: u64,
    /// Ended runs by playbook and final state; a pair with no run is absent.
    pub runs_ended: Vec<RunsEnded>,
}

#[derive(Debug, Clone)]
pub struct RunsEnded {
    pub playbook: String,
    pub state: RunState,
    pub count: u64,
}

impl Store {
    /// The figures, from one read transaction.
    pub async fn activity(&self) -> Result<Activity, StoreError> {
        let mut tx = self.reader.begin().await?;
        let runs_active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE state IN ('pending', 'running', 'waiting_approval')",
        )
        .fetch_one(&mut *tx)
        .await?;
        let approvals_pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
                .fetch_one(&mut *tx)
                .await?;
        let runs_ended: Vec<(String, RunState, i64)> = sqlx::query_as(
            "SELECT playbook, state, COUNT(*) FROM runs
             WHERE state NOT IN ('pending', 'running', 'waiting_approval')
             GROUP BY state, playbook",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Activity {
            runs_active: runs_active.unsigned_abs(),
            approvals_pending: approvals_pending.unsigned_abs(),
            runs_ended: runs_ended
                .into_iter()
                .map(|(playbook, state, count)| RunsEnded {
                    playbook,
                    state,
                    count: count.unsigned_abs(),
                })
                .collect(),
        })
    }
}
