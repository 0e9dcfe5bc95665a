//! The twin's control API, on loopback and plain HTTP: what tests and people use from outside
//! the process to read what the twin received, read or change the world, switch scenario,
//! move the clock and inject latency. (In-process callers use [`super::Lab::with_world`].)
//!
//! | call | effect |
//! |---|---|
//! | `GET /received` | every command and API call, in order |
//! | `GET /world` | the whole world model |
//! | `POST /scenario/{name}` | reset to a scenario |
//! | `POST /clock/advance?seconds=N` | move the twin's clock forward |
//! | `PUT /latency/{host}?ms=N` | delay every answer from a host |
//! | `PUT /vzdump?ms=N` | how long a backup takes |
//! | `PUT /fault/{host}` | that host's API answers `{"status", "body", "path", "bytes"}` instead |
//! | `DELETE /fault/{host}` | that host's API answers for real again |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use super::world::ApiFault;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::ssh::SharedWorld;
use crate::clock::Clock;

/// Wall-clock time plus an offset the control API can move: the lab's injectable clock.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: Mutex<chrono::Duration>,
}

/// The clock may be moved at most this far ahead, so time arithmetic never overflows.
const MAX_OFFSET_DAYS: i64 = 3650;

impl OffsetClock {
    /// Moves the clock forward, refusing to go more than ten years ahead.
    pub fn advance(&self, by: chrono::Duration) -> Result<(), String> {
        let mut offset = self.offset.lock().expect("clock lock");
        let moved = offset
            .checked_add(&by)
            .filter(|o| *o <= chrono::Duration::days(MAX_OFFSET_DAYS));
        match moved {
            Some(moved) => {
                *offset = moved;
                Ok(())
            }
            None => Err(format!(
                "the clock may move at most {MAX_OFFSET_DAYS} days ahead"
            )),
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("clock lock")
    }
}

#[derive(Clone)]
struct ControlState {
    world: SharedWorld,
    clock: Arc<OffsetClock>,
}

pub fn router(world: SharedWorld, clock: Arc<OffsetClock>) -> Router {
    Router::new()
        .route("/received", get(received))
        .route("/world", get(world_state))
        .route("/scenario/{name}", post(scenario))
        .route("/clock/advance", post(advance))
        .route("/latency/{host}", put(latency))
        .route("/vzdump", put(vzdump_duration))
        .route("/fault/{host}", put(set_fault).delete(clear_fault))
        .with_state(ControlState { world, clock })
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "bad_request", "message": message}})),
    )
        .into_response()
}

async fn received(State(state): State<ControlState>) -> Response {
    let world = state.world.lock().expect("world lock");
    Json(json!(world.received)).into_response()
}

async fn world_state(State(state): State<ControlState>) -> Response {
    let world = state.world.lock().expect("world lock");
    Json(json!(*world)).into_response()
}

async fn scenario(State(state): State<ControlState>, Path(name): Path<String>) -> Response {
    let mut world = state.world.lock().expect("world lock");
    match world.load(&name) {
        Ok(()) => Json(json!({"scenario": name})).into_response(),
        Err(message) => bad_request(message),
    }
}

async fn advance(
    State(state): State<ControlState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(seconds) = query
        .get("seconds")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s >= 0)
    else {
        return bad_request(
            "give ?seconds=N, a whole number of seconds to move forward".to_owned(),
        );
    };
    if let Err(message) = state
        .clock
        .advance(chrono::Duration::seconds(seconds.min(i64::MAX / 1000)))
    {
        return bad_request(message);
    }
    Json(json!({"now": state.clock.now()})).into_response()
}

async fn latency(
    State(state): State<ControlState>,
    Path(host): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(ms) = query
        .get("ms")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|ms| *ms <= 60_000)
    else {
        return bad_request("give ?ms=N, 0 to 60000".to_owned());
    };
    let mut world = state.world.lock().expect("world lock");
    if !world.guests.iter().any(|g| g.host == host) && host != super::estate::PBS_HOST {
        return bad_request(format!("no host '{}'", host.escape_debug()));
    }
    world
        .latency
        .insert(host.clone(), Duration::from_millis(ms));
    Json(json!({"host": host, "ms": ms})).into_response()
}

async fn vzdump_duration(
    State(state): State<ControlState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(ms) = query
        .get("ms")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|ms| *ms <= 3_600_000)
    else {
        return bad_request("give ?ms=N, 0 to 3600000".to_owned());
    };
    state.world.lock().expect("world lock").vzdump_duration = Duration::from_millis(ms);
    Json(json!({"vzdump_ms": ms})).into_response()
}

/// The most a fault may pad its body to: enough to exceed any client's cap.
const MAX_FAULT_BYTES: usize = 64 * 1024 * 1024;

async fn set_fault(
    State(state): State<ControlState>,
    Path(host): Path<String>,
    body: Result<Json<ApiFault>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(fault)) = body else {
        return bad_request(
            "give {\"status\": 100-599, \"body\": text, \"path\": part of a path, \"bytes\": N}"
                .to_owned(),
        );
    };
    if !(100..=599).contains(&fault.status) || fault.bytes > MAX_FAULT_BYTES {
        return bad_request(format!(
            "status is 100 to 599, bytes at most {MAX_FAULT_BYTES}"
        ));
    }
    let mut world = state.world.lock().expect("world lock");
    if !world.guests.iter().any(|g| g.host == host) && host != super::estate::PBS_HOST {
        return bad_request(format!("no host '{}'", host.escape_debug()));
    }
    world.api_faults.insert(host.clone(), fault);
    Json(json!({"host": host})).into_response()
}

async fn clear_fault(State(state): State<ControlState>, Path(host): Path<String>) -> Response {
    let removed = state
        .world
        .lock()
        .expect("world lock")
        .api_faults
        .remove(&host)
        .is_some();
    Json(json!({"host": host, "cleared": removed})).into_response()
}
