//! runbookd fixes a Proxmox homelab's broken backups before a human wakes up.
//!
//! Alerts arrive over HTTP, become incidents, and each incident runs the matching playbook as a
//! durable state machine. Everything is recorded in SQLite.
//!
//! ```text
//! HTTP intake ─► normalize (Alert) ─► dedupe into Incident ─► match Playbook ─► Run
//!                                                  diagnose ─► cause ─► steps ─► verify
//!                                                                exec (SSH, PBS, PVE)
//!                                           │
//!                                     audit log ◄── every intake and transition, with its actor
//! ```
//!
//! # Layout
//! - [`config`]: the TOML config, overrides, defaults, and `runbookd check`'s validation.
//! - [`auth`]: roles and tokens, compared in constant time.
//! - [`intake`]: every accepted payload format → [`intake::Alert`], and the one fingerprint
//!   function.
//! - [`store`]: SQLite repositories (one writer connection, read-only readers), migrations in
//!   `migrations/`: intake and incidents, the append-only audit trail, runs (every state change
//!   fenced by lease owner and attempt), step attempts, approvals, safety controls, idempotency
//!   keys.
//! - [`exec`]: how runbookd reaches hosts: command templates and the one quoting function, the
//!   SSH executor, the PBS and PVE API clients.
//! - [`playbook`]: the playbook YAML model and its validation (`runbookd check`).
//! - [`engine`]: intake (a delivery → its incidents → their runs, in one transaction, with the
//!   incident lifecycle), routing alerts to playbooks, the worker, diagnosis, steps.
//! - [`cli`]: `runbookd incidents|runs|approvals|approve|reject|pause|resume`, clients of a
//!   running service's REST API: tables and timelines for people, `--json` for scripts.
//! - [`notify`]: notifications to webhook, ntfy and Slack sinks, from the audit trail, with
//!   signed single-use approve and reject links.
//! - [`demo`]: `runbookd demo`, the story in a terminal.
//! - [`audit_story`]: the audit trail in words, one sentence per event, for the page, the CLI
//!   and the demo.
//! - [`lab`]: the simulated estate (`runbookd lab`): world model, host shell, SSH servers, HTTPS
//!   APIs, control API.
//! - [`http`]: routes, auth layer, the one [`http::AppError`]; the agent's tools (MCP at `/mcp`,
//!   the REST bridge `/api/call`, one catalog in [`http::tools`]); `/openapi.json` (utoipa).
//! - [`startup`]: builds the app bound to a port (port 0 in tests) and runs it until shutdown.
//! - [`telemetry`]: logs and metrics. [`clock`]: the one clock.
//!
//! # Errors
//! Library code that callers branch on returns concrete errors (`IntakeError`, `StoreError`,
//! `AppError`), classified where they happen. Start-up and CLI plumbing, where the only thing
//! to do with an error is to report it, use `anyhow` with context.

pub mod audit_story;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod exec;
pub mod http;
pub mod intake;
pub mod lab;
pub mod notify;
pub mod playbook;
pub mod preflight;
pub mod startup;
pub mod store;
pub mod telemetry;
