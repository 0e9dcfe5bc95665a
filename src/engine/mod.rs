//! The engine: from an incident to a playbook run. So far it diagnoses: [`diagnose::diagnose`]
//! runs a playbook's read-only probes in parallel against the estate, extracts the facts, and
//! picks the first cause whose condition holds, with the facts that made it match. Driving a
//! run through remediation and verification, on the store's fenced run transitions
//! ([`crate::store::runs`]), is the work that remains.
//!
//! - [`estate`]: the executors a run uses, built from the inventory.
//! - [`scope`]: typed values for template placeholders (parameters, inventory, settings, facts).
//! - [`facts`]: fact extraction and three-valued conditions.
//! - [`builtins`]: probes whose logic is code (stale groups, vzdump logs, running vzdumps).

pub mod builtins;
pub mod diagnose;
pub mod dispatch;
pub mod estate;
pub mod facts;
pub mod scope;
pub mod step;
pub mod worker;
