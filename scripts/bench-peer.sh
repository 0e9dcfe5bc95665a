#!/usr/bin/env bash
# runbookd's intake against a peer, side by side in one run: Debian's `webhook` (adnanh/webhook
# 2.8) with a no-op hook, both on loopback, both driven by wrk (2 threads, 32 connections,
# BENCH_SECONDS each, default 10) posting the reference Alertmanager notification
# (tests/fixtures/reference/alertmanager-v4.json):
#   unique    every request another alert (its own fingerprint and backup_id label);
#   repeated  the same alert every time.
# Each load runs in BENCH_ROUNDS rounds (default 3); a round measures both servers one right
# after the other, alternating which goes first. The machine's speed drifts by a fifth over
# minutes (a VM's neighbours), so one sample of each server, a minute apart, can compare the
# drift more than the servers: each round's ratio pairs samples taken moments apart, and the
# targets are read off the median of the rounds' ratios. Every round is printed.
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
# Usage: scripts/bench-peer.sh [all|peer|startup]   (default all; BENCH_SECONDS, BENCH_ROUNDS, RUNBOOKD_BIN)
# Installs wrk (the load generator) and webhook (the peer) with apt-get when missing, and
# sqlite3 (to seed and check the databases).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-all}
SECONDS_EACH=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
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

# webhook under one load, on a fresh server; sets WH_RATE WH_P50 WH_P99 WH_RSS.
measure_webhook() {
    local name=$1 unique=$2 round=$3 requests bad
    local dir=$WORK/$name-webhook-$round
    settle
    start_webhook "$dir"
    read -r WH_RATE WH_P50 WH_P99 requests bad < <(load "$WH_URL/hooks/alertmanager" "$unique" "$dir/wrk")
    WH_RSS=$(peak_rss_mib "$WH_PID")
    stop "$WH_PID"
}

# runbookd under one load, on a fresh server and database, then checks that the database holds
# what was answered; sets RB_RATE RB_P50 RB_P99 RB_RSS.
measure_runbookd() {
    local name=$1 unique=$2 round=$3 requests bad
    local dir=$WORK/$name-runbookd-$round
    settle
    start_runbookd "$dir"
    read -r RB_RATE RB_P50 RB_P99 requests bad < <(load "$RB_URL/webhook/alertmanager" "$unique" "$dir/wrk")
    RB_RSS=$(peak_rss_mib "$RB_PID")
    stop "$RB_PID"
    if [[ $bad != 0 ]]; then
        echo "runbookd answered $bad requests with other than 2xx:" >&2
        tail -n 20 "$dir/log" >&2
        exit 1
    fi
    local db=$dir/runbookd.db incidents alerts counted runs
    incidents=$(sqlite3 "$db" 'SELECT COUNT(*) FROM incidents')
    alerts=$(sqlite3 "$db" 'SELECT COUNT(*) FROM alerts')
    counted=$(sqlite3 "$db" 'SELECT COALESCE(SUM(alert_count), 0) FROM incidents')
    runs=$(sqlite3 "$db" 'SELECT COUNT(*) FROM runs')
    echo "round $round $name: runbookd answered $requests posts, stored $alerts alerts in $incidents incidents (counted $counted), $runs runs (no estate: none start)" >&2
    if [[ $unique == 0 ]]; then
        # Posts wrk cut off at the end may be stored without being counted by wrk.
        if [[ $incidents != 1 || $runs != 0 || $counted -lt $requests ]]; then
            echo "FAIL: the repeated alert must be one incident counting every post, and no run" >&2
            exit 1
        fi
    elif ((incidents < requests)); then
        echo "FAIL: $requests unique alerts answered, $incidents incidents stored" >&2
        exit 1
    fi
}

ROWS=()
# Per load, one line per round: "rate_ratio p99_ratio rb_rss".
declare -A RATIOS
# One round of one load against both servers, each started fresh (so its peak RSS is this
# load's), one right after the other; odd rounds start with webhook, even rounds with runbookd.
compare() {
    local name=$1 unique=$2 round=$3
    if ((round % 2)); then
        measure_webhook "$name" "$unique" "$round"
        measure_runbookd "$name" "$unique" "$round"
    else
        measure_runbookd "$name" "$unique" "$round"
        measure_webhook "$name" "$unique" "$round"
    fi
    ROWS+=("$(awk -v n="$name" -v r="$round" -v rr="$RB_RATE" -v wr="$WH_RATE" -v r50="$RB_P50" -v w50="$WH_P50" \
        -v r99="$RB_P99" -v w99="$WH_P99" -v rrss="$RB_RSS" -v wrss="$WH_RSS" 'BEGIN {
        printf "| %-8s | %5d | %8d/s | %8d/s | %5.2fx | %7.2f | %7.2f | %7.2f | %7.2f | %5.2fx | %6.1f | %6.1f |",
            n, r, rr, wr, rr / wr, r50, w50, r99, w99, (r99 > 0 ? w99 / r99 : 0), rrss, wrss }')")
    RATIOS[$name]+="$(awk -v rr="$RB_RATE" -v wr="$WH_RATE" -v r99="$RB_P99" -v w99="$WH_P99" -v rss="$RB_RSS" \
        'BEGIN { printf "%.4f %.4f %s", rr / wr, (r99 > 0 ? w99 / r99 : 0), rss }')"$'\n'
}

# The median of each load's per-round ratios, and its highest peak RSS.
summary() {
    local name=$1
    printf '%s' "${RATIOS[$name]}" | awk -v n="$name" '
        function median(a, k,   i, j, t) {
            for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        NF == 3 { k++; rate[k] = $1; p99[k] = $2; if ($3 > rss) rss = $3 }
        END { printf "%-8s median of %d rounds: rate %.2fx, p99 webhook/runbookd %.2fx; runbookd peak RSS %.1f MiB\n",
                     n, k, median(rate, k), median(p99, k), rss }'
}

peer() {
    echo "wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_EACH}s, reference Alertmanager body; $(nproc) CPUs; $ROUNDS rounds" >&2
    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        compare unique 1 "$round"
        compare repeated 0 "$round"
    done
    echo
    echo "| load     | round | runbookd   | webhook    | rate   | p50 ms  | p50 ms  | p99 ms  | p99 ms  | p99    | RSS MiB | RSS MiB |"
    echo "|          |       |            |            | ratio  | runbookd| webhook | runbookd| webhook | webhook/runbookd | runbookd | webhook |"
    printf '%s\n' "${ROWS[@]}"
    echo
    summary unique
    summary repeated
    echo
    echo "targets (on the medians): unique rate >= 2x and runbookd p99 <= 1/5 of webhook's (p99 ratio >= 5x); repeated >= 3x; runbookd RSS <= 64 MiB"
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
