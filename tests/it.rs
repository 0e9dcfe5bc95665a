//! The integration suite, linked as one binary: each file beside this one is a module, so the
//! suite builds and links once instead of once per file. cargo-nextest still runs every test in
//! its own process, so process-wide state (the metrics recorder, environment) stays per test.
//! Run one file's tests with `cargo nextest run -E 'test(/^lifecycle::/)'`.

mod common;

mod agent_origins;
mod alertmanager;
mod api_call;
mod api_clients;
mod api_contract;
mod approvals;
mod audit_export;
mod auth_matrix;
mod backup;
mod backup_groups;
mod bad_input;
mod browser;
mod cli;
mod cli_check;
mod container;
mod crash_safety;
mod dedupe;
mod demo;
mod deploy;
mod diagnose;
mod engine_lifecycle;
mod engine_runs;
mod fresh_install;
mod guards;
mod idempotency;
mod incidents_api;
mod injection;
mod intake_formats;
mod intake_writer;
mod lab_control;
mod lab_remediation;
mod lab_scenarios;
mod lab_walkthrough;
mod lifecycle;
mod mcp;
mod metrics;
mod monitoring;
mod notify;
mod one_process;
mod openapi;
mod openssh;
mod operations_api;
mod playbook_check;
mod preflight;
mod readme_quick_start;
mod restart;
mod retention;
mod runs;
mod safety;
mod safety_controls;
mod secrets_at_rest;
mod serve_lab_run;
mod shipped_binary;
mod steps;
mod timeline_svg;
mod timeouts;
mod ui;
mod words;
