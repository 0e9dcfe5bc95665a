//! The twin's PBS and PVE REST APIs, with the shapes and error bodies of reference/pbs-api.md
//! and reference/pve-api.md. Every call is recorded in the world's log.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::estate::{self, DATASTORE, GuestKind, PBS_HOST, PVE_STORAGE_ID};
use super::ssh::SharedWorld;
use super::world::{ApiFault, Group, Nfs, Received, World};

/// An API token the twin accepts: `root@pam!runbookd` and its secret.
#[derive(Clone)]
pub struct ApiToken {
    pub id: String,
    pub secret: String,
}

#[derive(Clone)]
struct ApiState {
    world: SharedWorld,
    /// The host this API runs on, for the log and latency.
    host: String,
    token: ApiToken,
}

/// Answers every request, records it, and applies the host's latency.
async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    // Recorded on arrival, so a call the client gave up on (a hung datastore) is in the log
    // too; its status is filled in if an answer goes out.
    let (index, latency, hung) = {
        let mut world = state.world.lock().expect("world lock");
        let hung = state.host == PBS_HOST
            && world.nfs == Nfs::Hung
            && request.uri().path().contains("/admin/datastore/");
        let now = world.now();
        let channel = if state.host == PBS_HOST {
            "pbs-api"
        } else {
            "pve-api"
        };
        world.record(Received {
            at: now,
            host: state.host.clone(),
            channel: channel.to_owned(),
            text: format!("{} {}", request.method(), request.uri()),
            executed: Vec::new(),
            exit: None,
        });
        let latency = world.latency.get(&state.host).copied().unwrap_or_default();
        (world.received.len() - 1, latency, hung)
    };
    tokio::time::sleep(latency).await;
    let fault = state
        .world
        .lock()
        .expect("world lock")
        .api_faults
        .get(&state.host)
        .filter(|f| request.uri().path().contains(&f.path))
        .cloned();
    if let Some(fault) = fault {
        return fault_answer(fault);
    }
    if hung {
        // A PBS whose NFS hangs never answers datastore calls.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let response = next.run(request).await;
    if let Some(received) = state
        .world
        .lock()
        .expect("world lock")
        .received
        .get_mut(index)
    {
        received.exit = Some(u32::from(response.status().as_u16()));
    }
    response
}

/// A fault's answer, as the control API set it.
fn fault_answer(fault: ApiFault) -> Response {
    let mut body = fault.body;
    if body.len() < fault.bytes {
        body.push_str(&" ".repeat(fault.bytes - body.len()));
    }
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

/// PBS: `PBSAPIToken=ID:SECRET` (or a space after the scheme). PVE: `PVEAPIToken=ID=SECRET`.
fn token_ok(headers: &HeaderMap, scheme: &str, separator: char, token: &ApiToken) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(rest) = value
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix(['=', ' ']))
    else {
        return false;
    };
    rest == format!("{}{separator}{}", token.id, token.secret)
}

/// PBS error bodies are the plain error string, although the type says JSON.
fn pbs_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn pve_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"data": null, "message": format!("{message}\n")})),
    )
        .into_response()
}

fn data(value: Value) -> Response {
    axum::Json(json!({ "data": value })).into_response()
}

async fn pbs_auth(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if !token_ok(request.headers(), "PBSAPIToken", ':', &state.token) {
        return pbs_error(
            StatusCode::UNAUTHORIZED,
            "authentication failed - invalid token",
        );
    }
    next.run(request).await
}

async fn pve_auth(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if !token_ok(request.headers(), "PVEAPIToken", '=', &state.token) {
        return pve_error(StatusCode::UNAUTHORIZED, "invalid token value!");
    }
    next.run(request).await
}

/// The PBS API, on the PBS host.
pub fn pbs_router(world: SharedWorld, token: ApiToken) -> Router {
    let state = ApiState {
        world,
        host: PBS_HOST.to_owned(),
        token,
    };
    Router::new()
        .route(
            "/api2/json/version",
            get(|| async {
                data(json!({"version": "3.2", "release": "4", "repoid": "7a1f0c3de2b94f61"}))
            }),
        )
        .route(
            "/api2/json/admin/datastore",
            get(|| async { data(json!([{"store": DATASTORE, "comment": null}])) }),
        )
        .route(
            "/api2/json/admin/datastore/{store}/groups",
            get(pbs_groups).delete(pbs_forget_group),
        )
        .route(
            "/api2/json/admin/datastore/{store}/snapshots",
            get(pbs_snapshots),
        )
        .route(
            "/api2/json/admin/datastore/{store}/status",
            get(pbs_store_status),
        )
        .route("/api2/json/status/datastore-usage", get(pbs_usage))
        .route("/api2/json/nodes/{node}/tasks", get(pbs_tasks))
        // The token's own privileges, as a correctly set-up runbookd token has them.
        .route(
            "/api2/json/access/permissions",
            get(|| async {
                data(json!({
                    format!("/datastore/{DATASTORE}"): {"Datastore.Audit": 1, "Datastore.Modify": 1, "Datastore.Backup": 1},
                    "/system": {"Sys.Audit": 1},
                }))
            }),
        )
        .fallback(|method: Method| async move {
            pbs_error(
                StatusCode::NOT_IMPLEMENTED,
                &format!("twin: {method} on this path is not simulated"),
            )
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), pbs_auth))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// The world for a call on datastore `store`: refused if the store is unknown or PBS cannot
/// open it (the NFS troubles are the main datastore's). Backups that are due end first: they
/// end in their own time, whoever asks.
fn open_datastore<'a>(
    state: &'a ApiState,
    store: &str,
) -> Result<MutexGuard<'a, World>, Box<Response>> {
    let mut world = state.world.lock().expect("world lock");
    if store != DATASTORE && !world.other_datastores.contains_key(store) {
        return Err(Box::new(pbs_error(
            StatusCode::BAD_REQUEST,
            &format!("datastore '{store}' does not exist"),
        )));
    }
    world.settle();
    match world.datastore_error().filter(|_| store == DATASTORE) {
        Some(error) => Err(Box::new(pbs_error(StatusCode::BAD_REQUEST, &error))),
        None => Ok(world),
    }
}

/// The groups of `store`, which [`open_datastore`] found.
fn groups_of<'w>(world: &'w mut World, store: &str) -> &'w mut Vec<Group> {
    if store == DATASTORE {
        &mut world.groups
    } else {
        world
            .other_datastores
            .get_mut(store)
            .expect("open_datastore checked the store")
    }
}

async fn pbs_groups(State(state): State<ApiState>, Path(store): Path<String>) -> Response {
    let mut world = match open_datastore(&state, &store) {
        Ok(world) => world,
        Err(response) => return *response,
    };
    let groups: Vec<Value> = groups_of(&mut world, &store)
        .iter()
        .map(|g| {
            let files: &[&str] = match g.kind {
                GuestKind::Qemu => &[
                    "client.log.blob",
                    "drive-scsi0.img.fidx",
                    "index.json.blob",
                    "qemu-server.conf.blob",
                ],
                GuestKind::Lxc => &[
                    "catalog.pcat1.didx",
                    "index.json.blob",
                    "pct.conf.blob",
                    "root.pxar.didx",
                ],
            };
            json!({
                "backup-type": g.kind.backup_type(), "backup-id": g.vmid.to_string(),
                "last-backup": g.last_backup.timestamp(), "backup-count": g.count,
                "files": files, "owner": "root@pam!pve"
            })
        })
        .collect();
    data(Value::Array(groups))
}

async fn pbs_forget_group(
    State(state): State<ApiState>,
    Path(store): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut world = match open_datastore(&state, &store) {
        Ok(world) => world,
        Err(response) => return *response,
    };
    let (Some(kind), Some(id)) = (query.get("backup-type"), query.get("backup-id")) else {
        return pbs_error(
            StatusCode::BAD_REQUEST,
            "parameter verification errors: backup-type, backup-id missing",
        );
    };
    let groups = groups_of(&mut world, &store);
    let before = groups.len();
    groups.retain(|g| !(g.kind.backup_type() == kind && g.vmid.to_string() == *id));
    if groups.len() == before {
        return pbs_error(
            StatusCode::NOT_FOUND,
            &format!("group '{kind}/{id}' not found"),
        );
    }
    data(Value::Null)
}

async fn pbs_snapshots(
    State(state): State<ApiState>,
    Path(store): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut world = match open_datastore(&state, &store) {
        Ok(world) => world,
        Err(response) => return *response,
    };
    let snapshots: Vec<Value> = groups_of(&mut world, &store)
        .iter()
        .filter(|g| query.get("backup-type").is_none_or(|t| t == g.kind.backup_type()))
        .filter(|g| query.get("backup-id").is_none_or(|id| *id == g.vmid.to_string()))
        .map(|g| {
            json!({
                "backup-type": g.kind.backup_type(), "backup-id": g.vmid.to_string(),
                "backup-time": g.last_backup.timestamp(),
                "files": [{"filename": "index.json.blob", "crypt-mode": "none", "size": 512}],
                "size": 34_359_738_368_u64, "owner": "root@pam!pve", "protected": false,
                "verification": {"upid": "UPID:pbs:000004D2:0000162E:00000001:6545C2B0:verify:pbs-datastore:root@pam:", "state": "ok"}
            })
        })
        .collect();
    data(Value::Array(snapshots))
}

async fn pbs_store_status(State(state): State<ApiState>, Path(store): Path<String>) -> Response {
    match open_datastore(&state, &store) {
        Ok(_) => data(json!({
            "total": 8_026_531_840_000_u64,
            "used": 2_308_974_100_000_u64,
            "avail": 5_717_557_740_000_u64
        })),
        Err(response) => *response,
    }
}

async fn pbs_usage(State(state): State<ApiState>) -> Response {
    let mut world = state.world.lock().expect("world lock");
    // Backups end in their own time, whoever asks.
    world.settle();
    let entry = match world.datastore_error() {
        Some(error) => json!({"store": DATASTORE, "error": error}),
        None => json!({
            "store": DATASTORE, "total": 8_026_531_840_000_u64, "used": 2_308_974_100_000_u64,
            "avail": 5_717_557_740_000_u64, "history": [0.28, 0.285, 0.287],
            "estimated-full-date": 1_830_297_600, "gc-status": {"upid": null}
        }),
    };
    data(json!([entry]))
}

async fn pbs_tasks(State(state): State<ApiState>) -> Response {
    let mut world = state.world.lock().expect("world lock");
    // Backups end in their own time, whoever asks.
    world.settle();
    let tasks: Vec<Value> = world
        .tasks
        .iter()
        .flat_map(|t| t.results.iter().map(move |r| (t, r)))
        .filter_map(|(t, r)| r.pbs_status.as_ref().map(|status| (t, r, status)))
        .map(|(t, r, status)| {
            let worker_id = format!("{DATASTORE}:{}/{}", r.kind.backup_type(), r.vmid);
            let start = t.started.timestamp();
            json!({
                "upid": format!("UPID:pbs:{:08X}:{:08X}:{:08X}:{:08X}:backup:{worker_id}:root@pam!pve:", 0x4d2, 0x162e, r.vmid, start),
                "node": "pbs", "pid": 0x4d2, "pstart": 0x162e, "starttime": start,
                "worker_type": "backup", "worker_id": worker_id, "user": "root@pam!pve",
                "endtime": t.ends.timestamp(),
                "status": status,
            })
        })
        .collect();
    let total = tasks.len();
    axum::Json(json!({"data": tasks, "total": total})).into_response()
}

/// The PVE API, as served by `host` (any node answers for the whole cluster).
pub fn pve_router(world: SharedWorld, host: &str, token: ApiToken) -> Router {
    let state = ApiState {
        world,
        host: host.to_owned(),
        token,
    };
    Router::new()
        .route("/api2/json/nodes/{node}/vzdump", post(pve_vzdump))
        .route("/api2/json/nodes/{node}/tasks", get(pve_tasks))
        .route(
            "/api2/json/nodes/{node}/tasks/{upid}/status",
            get(pve_task_status),
        )
        .route(
            "/api2/json/nodes/{node}/qemu",
            get(|s, p| pve_guests(s, p, GuestKind::Qemu)),
        )
        .route(
            "/api2/json/nodes/{node}/lxc",
            get(|s, p| pve_guests(s, p, GuestKind::Lxc)),
        )
        .route(
            "/api2/json/storage/{storage}",
            get(pve_storage).put(pve_set_storage),
        )
        .route("/api2/json/cluster/backup", get(pve_backup_jobs))
        // The token's own privileges, as a correctly set-up runbookd token has them.
        .route(
            "/api2/json/access/permissions",
            get(|| async {
                data(json!({
                    "/": {"Sys.Audit": 1, "Sys.Modify": 1},
                    "/vms": {"VM.Audit": 1, "VM.Backup": 1},
                    format!("/storage/{PVE_STORAGE_ID}"): {"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1, "Datastore.Audit": 1},
                }))
            }),
        )
        .route(
            "/api2/json/cluster/backup/{id}",
            axum::routing::put(pve_set_backup_job),
        )
        .fallback(|method: Method| async move {
            pve_error(
                StatusCode::NOT_IMPLEMENTED,
                &format!("twin: {method} on this path is not simulated"),
            )
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), pve_auth))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The error answer for a node that is not in the cluster.
fn unknown_node(node: &str) -> Option<Response> {
    if estate::PVE_HOSTS.contains(&node) {
        None
    } else {
        Some(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            ),
        ))
    }
}

async fn pve_vzdump(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(response) = unknown_node(&node) {
        return response;
    }
    let params = form(&body);
    let mut vmids = Vec::new();
    if let Some(list) = params.get("vmid") {
        for id in list.split(',') {
            match id.trim().parse::<u32>() {
                Ok(id) => vmids.push(id),
                Err(_) => {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"vmid": format!("invalid format - value '{id}' does not look like a valid VM ID\n")}}))).into_response();
                }
            }
        }
    } else if params.get("all").map(String::as_str) != Some("1") {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"vmid": "property is missing and it is not optional\n"}}))).into_response();
    }
    if let Some(storage) = params.get("storage").filter(|s| *s != PVE_STORAGE_ID) {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("storage '{storage}' does not exist"),
        );
    }
    let mut world = state.world.lock().expect("world lock");
    world.settle();
    match world.start_vzdump_task(&node, &vmids) {
        Some(upid) => data(json!(upid)),
        None => data(json!("OK")),
    }
}

async fn pve_task_status(
    State(state): State<ApiState>,
    Path((node, upid)): Path<(String, String)>,
) -> Response {
    let mut world = state.world.lock().expect("world lock");
    world.settle();
    let now = world.now();
    let Some(task) = world
        .tasks
        .iter()
        .find(|t| t.upid == upid && t.node == node)
    else {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to parse worker upid '{upid}'"),
        );
    };
    let running = now < task.ends;
    let mut status = json!({
        "pid": 0x1000, "status": if running { "running" } else { "stopped" }, "type": "vzdump",
        "id": if task.vmids.len() == 1 { task.vmids[0].to_string() } else { String::new() },
        "user": "root@pam!runbookd", "upid": task.upid, "starttime": task.started.timestamp(),
        "pstart": 0x7000, "node": task.node,
    });
    if !running {
        status["exitstatus"] = json!(task.exitstatus);
    }
    data(status)
}

/// Tasks on a node; `source=active` lists only the running ones.
async fn pve_tasks(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut world = state.world.lock().expect("world lock");
    world.settle();
    let now = world.now();
    let active_only = query.get("source").map(String::as_str) == Some("active");
    let since = query
        .get("since")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let tasks: Vec<Value> = world
        .tasks
        .iter()
        .filter(|t| {
            t.node == node && (!active_only || now < t.ends) && t.started.timestamp() >= since
        })
        .map(|t| {
            let mut item = json!({
                "upid": t.upid, "node": t.node, "type": "vzdump", "user": "root@pam!runbookd",
                "id": if t.vmids.len() == 1 { t.vmids[0].to_string() } else { String::new() },
                "starttime": t.started.timestamp(),
            });
            if now >= t.ends {
                item["status"] = json!(t.exitstatus);
                item["endtime"] = json!(t.ends.timestamp());
            }
            item
        })
        .collect();
    data(Value::Array(tasks))
}

async fn pve_guests(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    kind: GuestKind,
) -> Response {
    if let Some(response) = unknown_node(&node) {
        return response;
    }
    let world = state.world.lock().expect("world lock");
    let guests: Vec<Value> = world
        .guests
        .iter()
        .filter(|g| g.host == node && g.kind == kind)
        .map(|g| {
            let mut item = json!({
                "vmid": g.vmid, "status": if g.running { "running" } else { "stopped" }, "name": g.name,
                "mem": 2_147_483_648_u64, "maxmem": 4_294_967_296_u64, "cpus": 2, "uptime": if g.running { 86_400 } else { 0 },
            });
            if kind == GuestKind::Lxc {
                item["type"] = json!("lxc");
            }
            item
        })
        .collect();
    data(Value::Array(guests))
}

fn storage_json(fingerprint: &str) -> Value {
    json!({
        "storage": PVE_STORAGE_ID, "type": "pbs", "server": "127.0.0.1", "datastore": DATASTORE,
        "username": "root@pam", "fingerprint": fingerprint.to_ascii_lowercase(), "content": "backup",
        "shared": 1, "prune-backups": "keep-all=1", "digest": "3d1f0e0c5b7a9e2f4c6d8a0b1c2d3e4f5a6b7c8d",
    })
}

async fn pve_storage(State(state): State<ApiState>, Path(storage): Path<String>) -> Response {
    if storage != PVE_STORAGE_ID {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("storage '{storage}' does not exist"),
        );
    }
    let world = state.world.lock().expect("world lock");
    data(storage_json(&world.storage_fingerprint))
}

async fn pve_set_storage(
    State(state): State<ApiState>,
    Path(storage): Path<String>,
    body: Bytes,
) -> Response {
    if storage != PVE_STORAGE_ID {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("update storage failed: storage '{storage}' does not exist"),
        );
    }
    let params = form(&body);
    let mut world = state.world.lock().expect("world lock");
    if let Some(fingerprint) = params.get("fingerprint") {
        world.storage_fingerprint = fingerprint.clone();
    }
    data(Value::Null)
}

async fn pve_backup_jobs(State(state): State<ApiState>) -> Response {
    let world = state.world.lock().expect("world lock");
    data(world.backup_job_json())
}

async fn pve_set_backup_job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if id != estate::BACKUP_JOB_ID {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("job '{id}' does not exist"),
        );
    }
    let params = form(&body);
    let mut world = state.world.lock().expect("world lock");
    if let Some(enable) = params.get("enabled").or_else(|| params.get("enable")) {
        world.job_enabled = enable == "1";
    }
    data(Value::Null)
}
