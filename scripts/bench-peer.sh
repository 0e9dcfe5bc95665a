#!/usr/bin/env bash
# runbookd's intake against a peer, side by side in one run: Debian's `webhook` (adnanh/webhook
# 2.8) with a no-op hook, both on loopback, both driven by wrk (2 threads, 32 connections,
# BENCH_SECONDS each, default 10) posting the reference Alertmanager notification
# (tests/fixtures/reference/alertmanager-v4.json):
#   unique    every request another alert (its own fingerprint and backup_id label);
#   repeated  the same alert every time.
# Each server starts on a settled machine: the previous one's dirty pages written back, and
# its leftovers (webhook forks a hook process per request) given a few seconds to go.
# Prints rate, p50, p99 and peak RSS (VmHWM from /proc, each server started fresh per load)
# and runbookd's ratios to webhook. runbookd runs the release build on a fresh SQLite file at
# its default durability (WAL fsynced before each answer: a 202 is on disk), with no estate, so
# incidents are recorded and no run starts; after the repeated load the script checks there
# is exactly one incident, that it counted every answered post, and that there is no run.
#
# Then start-up: 100k incidents seeded with SQL into a database, `runbookd serve` timed from
# exec until /readyz answers 200 (best and median of 5).
#
# Usage: scripts/bench-peer.sh [all|peer|startup]       (default all; BENCH_SECONDS, RUNBOOKD_BIN)
# Installs wrk (the load generator) and webhook (the peer) with apt-get when missing, and
# sqlite3 (to seed and check the databases).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-all}
SECONDS_EACH=${BENCH_SECONDS:-10}
THREADS=2
CONNECTIONS=32
TOKEN=bench-ingest-7f3a9c1e5b2d8f4a6c0e9b3d7a1f5c2e
BODY=$PWD/tests/fixtures/reference/alertmanager-v4.json
LUA=$PWD/benches/peer/alertmanager.lua

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v webhook >/dev/null || missing+=(webhook)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian: wrk drives the load, webhook is the peer, sqlite3 seeds and checks the databases" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# RUNBOOKD_BIN runs another build (for trying the script on a debug build, say).
RUNBOOKD=${RUNBOOKD_BIN:-$PWD/target/release/runbookd}
if [[ -z ${RUNBOOKD_BIN:-} ]]; then
    echo "building runbookd (release)" >&2
    cargo build --release --quiet --bin runbookd
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until URL answers 200 (at most 30 s).
wait_ready() {
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not answer" >&2
    return 1
}

peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Starts runbookd on a fresh database DIR/runbookd.db; sets RB_PID and RB_URL.
start_runbookd() {
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir"
    RUNBOOKD_INGEST_TOKEN=$TOKEN RUNBOOKD_ADMIN_TOKEN=$TOKEN-admin RUST_LOG=warn \
        "$RUNBOOKD" serve --listen "127.0.0.1:$port" --db "$dir/runbookd.db" \
        >"$dir/log" 2>&1 &
    RB_PID=$!
    PIDS+=("$RB_PID")
    RB_URL=http://127.0.0.1:$port
    wait_ready "$RB_URL/readyz"
}

# Starts webhook with one no-op hook; sets WH_PID and WH_URL.
start_webhook() {
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/hooks.json" <<'EOF'
[{"id": "alertmanager", "execute-command": "/bin/true", "response-message": "accepted"}]
EOF
    webhook -hooks "$dir/hooks.json" -ip 127.0.0.1 -port "$port" >"$dir/log" 2>&1 &
    WH_PID=$!
    PIDS+=("$WH_PID")
    WH_URL=http://127.0.0.1:$port
    for _ in $(seq 300); do
        curl -fsS -o /dev/null -X POST -d '{}' "$WH_URL/hooks/alertmanager" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "webhook did not start: $(cat "$dir/log")" >&2
    return 1
}

# Before each server starts: the previous load's writeback done, and a pause for what the
# kernel still does after it (webhook leaves tens of thousands of exited processes to clean up),
# which otherwise lands on the next server's measurement.
settle() {
    sync
    sleep 3
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wrk's latency percentile line ("50%" or "99%") in milliseconds.
percentile_ms() {
    awk -v p="$2" '$1 == p {
        v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) }
        else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.2f", v
    }' "$1"
}

# Runs wrk against URL with BENCH_UNIQUE=$2; prints "rate p50 p99 requests non2xx" from its output.
load() {
    local url=$1 unique=$2 out=$3
    BENCH_BODY=$BODY BENCH_TOKEN=$TOKEN BENCH_UNIQUE=$unique \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -s "$LUA" "$url" >"$out"
    local rate requests non2xx
    rate=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$out")
    echo "$rate $(percentile_ms "$out" 50%) $(percentile_ms "$out" 99%) $requests ${non2xx:-0}"
}

ROWS=()
# One load against both servers: each started fresh, so its peak RSS is this load's.
compare() {
    local name=$1 unique=$2
    settle
    start_webhook "$WORK/$name-webhook"
    read -r wh_rate wh_p50 wh_p99 wh_requests wh_bad < <(load "$WH_URL/hooks/alertmanager" "$unique" "$WORK/$name-webhook/wrk")
    local wh_rss
    wh_rss=$(peak_rss_mib "$WH_PID")
    stop "$WH_PID"

    settle
    start_runbookd "$WORK/$name-runbookd"
    read -r rb_rate rb_p50 rb_p99 rb_requests rb_bad < <(load "$RB_URL/webhook/alertmanager" "$unique" "$WORK/$name-runbookd/wrk")
    local rb_rss
    rb_rss=$(peak_rss_mib "$RB_PID")
    stop "$RB_PID"
    if [[ $rb_bad != 0 ]]; then
        echo "runbookd answered $rb_bad requests with other than 2xx:" >&2
        tail -n 20 "$WORK/$name-runbookd/log" >&2
        exit 1
    fi
    local db=$WORK/$name-runbookd/runbookd.db
    local incidents alerts counted runs
    incidents=$(sqlite3 "$db" 'SELECT COUNT(*) FROM incidents')
    alerts=$(sqlite3 "$db" 'SELECT COUNT(*) FROM alerts')
    counted=$(sqlite3 "$db" 'SELECT COALESCE(SUM(alert_count), 0) FROM incidents')
    runs=$(sqlite3 "$db" 'SELECT COUNT(*) FROM runs')
    echo "$name: runbookd answered $rb_requests posts, stored $alerts alerts in $incidents incidents (counted $counted), $runs runs (no estate: none start)" >&2
    if [[ $unique == 0 ]]; then
        # Posts wrk cut off at the end may be stored without being counted by wrk.
        if [[ $incidents != 1 || $runs != 0 || $counted -lt $rb_requests ]]; then
            echo "FAIL: the repeated alert must be one incident counting every post, and no run" >&2
            exit 1
        fi
    elif ((incidents < rb_requests)); then
        echo "FAIL: $rb_requests unique alerts answered, $incidents incidents stored" >&2
        exit 1
    fi
    ROWS+=("$(awk -v n="$name" -v rr="$rb_rate" -v wr="$wh_rate" -v r50="$rb_p50" -v w50="$wh_p50" \
        -v r99="$rb_p99" -v w99="$wh_p99" -v rrss="$rb_rss" -v wrss="$wh_rss" 'BEGIN {
        printf "| %-8s | %8d/s | %8d/s | %5.2fx | %7.2f | %7.2f | %7.2f | %7.2f | %5.2fx | %6.1f | %6.1f |",
            n, rr, wr, rr / wr, r50, w50, r99, w99, (r99 > 0 ? w99 / r99 : 0), rrss, wrss }')")
}

peer() {
    echo "wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_EACH}s, reference Alertmanager body; $(nproc) CPUs" >&2
    compare unique 1
    compare repeated 0
    echo
    echo "| load     | runbookd   | webhook    | rate   | p50 ms  | p50 ms  | p99 ms  | p99 ms  | p99    | RSS MiB | RSS MiB |"
    echo "|          |            |            | ratio  | runbookd| webhook | runbookd| webhook | webhook/runbookd | runbookd | webhook |"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "targets: unique rate >= 2x and runbookd p99 <= 1/5 of webhook's (p99 ratio >= 5x); repeated >= 3x; runbookd RSS <= 64 MiB"
}

startup() {
    local dir=$WORK/startup
    mkdir -p "$dir"
    # The schema, as runbookd makes it.
    start_runbookd "$dir"
    stop "$RB_PID"
    sqlite3 "$dir/runbookd.db" <<'EOF'
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO incidents (fingerprint, name, source, severity, labels, status, alert_count,
                       first_seen, last_seen, resolved_at, resolved_by)
SELECT printf('seed-%06d', i), 'PBSBackupStale', 'alertmanager', 'warning',
       json_object('alertname', 'PBSBackupStale', 'backup_id', i),
       CASE WHEN i % 10 = 0 THEN 'open' ELSE 'resolved' END, 1,
       '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z',
       CASE WHEN i % 10 = 0 THEN NULL ELSE '2026-11-02T00:00:00Z' END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE 'source' END
FROM n;
EOF
    local count
    count=$(sqlite3 "$dir/runbookd.db" 'SELECT COUNT(*) FROM incidents')
    local port
    port=$(free_port)
    # exec to a 200 from /readyz, polled every millisecond.
    RUNBOOKD=$RUNBOOKD DB=$dir/runbookd.db PORT=$port TOKEN=$TOKEN python3 - "$count" <<'EOF'
import http.client, os, statistics, subprocess, sys, time

def ready(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False

times = []
for _ in range(5):
    env = dict(os.environ, RUNBOOKD_INGEST_TOKEN=os.environ["TOKEN"], RUST_LOG="warn")
    started = time.perf_counter()
    process = subprocess.Popen(
        [os.environ["RUNBOOKD"], "serve", "--listen", f"127.0.0.1:{os.environ['PORT']}",
         "--db", os.environ["DB"]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(os.environ["PORT"]):
        if process.poll() is not None:
            sys.exit("runbookd exited before it was ready")
        if time.perf_counter() - started > 30:
            sys.exit("runbookd was not ready within 30 s")
        time.sleep(0.001)
    times.append((time.perf_counter() - started) * 1000)
    process.terminate()
    process.wait()
print(f"startup to ready with {sys.argv[1]} incidents: best {min(times):.1f} ms, "
      f"median {statistics.median(times):.1f} ms (target <= 100 ms)")
EOF
}

case $MODE in
    all) peer; startup ;;
    peer) peer ;;
    startup) startup ;;
    *) echo "usage: $0 [all|peer|startup]" >&2; exit 2 ;;
esac
