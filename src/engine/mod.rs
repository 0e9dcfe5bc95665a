//! The engine: from an incident to a playbook run, and the run to its end.
//!
//! - [`intake`]: a delivery's alerts → incidents (the lifecycle) → runs, in one transaction.
//! - [`dispatch`]: routing alerts to playbooks; runs asked for by hand.
//! - [`worker`]: a worker leases a run and drives it: diagnose, remediate, verify; resumes runs
//!   a crashed worker left; stops at step boundaries when paused or when it lost the run.
//! - [`diagnose`]: the read-only probes in parallel, the facts, the first cause that holds.
//! - [`step`]: one step with every rule around it (approval, dry-run, safety controls, attempts).
//! - [`estate`]: the executors a run uses, built from the inventory.
//! - [`scope`]: typed values for template placeholders (parameters, inventory, settings, facts).
//! - [`facts`]: fact extraction and three-valued conditions.
//! - [`builtins`]: probes whose logic is code (stale groups, vzdump logs, running vzdumps).
//!
//! Every state change goes through the store's fenced run transitions
//! ([`crate::store::runs`]).

pub mod builtins;
pub mod diagnose;
pub mod dispatch;
pub mod estate;
pub mod facts;
pub mod intake;
pub mod scope;
pub mod step;
pub mod worker;
