#!/usr/bin/env bash
# ODBC benchmark: the ODBC provider against real ODBC drivers, in one run.
#
#   scripts/bench-odbc.sh [--scale 1.0] [--rate 2000] [--seconds 30]
#
# Prints, for the retail dataset (scale 1.0 = 653,620 synced rows):
#   initial sync rows/s PostgreSQL hq → store, and hq → store → SQLite
#     (SQLite ODBC driver) and hq → store → MariaDB (MariaDB Connector/ODBC),
#     each fan-out timed until its last table is complete;
#   journal polling under a steady write load into SQLite (--rate changes/s:
#     single-row UPDATEs in transactions of 20, plus a heartbeat row every
#     10 ms stamped with the host clock): the changes/s that reached hq, and
#     the p50/p99 lag of the heartbeats from their SQLite commit to their
#     arrival in hq (a trigger in hq stamps arrivals; same host clock);
#   the target: p99 < 2 × DITTO_CLOUD_SYNC_INTERVAL + 100 ms.
# Not a test: numbers vary between runs on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=1.0; RATE=2000; SECONDS_LOAD=30; INTERVAL=100
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
source scripts/lib/deps.sh
source scripts/lib/pg.sh
source scripts/lib/bench.sh
source scripts/lib/mariadb.sh
ensure_build_deps
ensure_postgres
ensure_odbc
cargo build --release --locked -q -p connector-worker --features odbc
CONNECTOR=$ROOT/target/release/connector
stop_maria() { maria_stop "$WORK/maria"; }
pg_work_dir connector-bench-odbc stop_maria
declare -A R

# Drivers from a private odbcinst.ini.
export ODBCSYSINI=$WORK/odbc ODBCINI=$WORK/odbc/odbc.ini
mkdir -p "$ODBCSYSINI"; : > "$ODBCINI"
D=/usr/lib/x86_64-linux-gnu/odbc
printf '[SQLite3]\nDriver=%s/libsqlite3odbc.so\n\n[MariaDB Unicode]\nDriver=%s/libmaodbc.so\n' "$D" "$D" > "$ODBCSYSINI/odbcinst.ini"

pg_start "$WORK/pg" "$(pg_free_port)" -c shared_buffers=512MB -c max_wal_size=4GB
maria_start "$WORK/maria" "$(pg_free_port)"
SYNCED="stores customers categories products inventory orders order_items store_order_numbers"
pg_psql postgres -c "CREATE DATABASE hq"
pg_psql hq -f scripts/retail/schema.sql
echo "loading scale $SCALE into hq …"
pg_psql hq -v scale="$SCALE" -f scripts/retail/generate.sql
ROWS=0; for t in $SYNCED; do ROWS=$((ROWS + $(pg_psql hq -At -c "SELECT count(*) FROM $t"))); done
echo "hq: $ROWS synced rows"
SQLITE=$WORK/shop.db
sqlite3 "$SQLITE" < scripts/retail/schema.sqlite.sql
sqlite3 "$SQLITE" "PRAGMA journal_mode=WAL; CREATE TABLE heartbeats (id INT PRIMARY KEY, sent_at TIMESTAMPTZ);" > /dev/null
maria_root "CREATE DATABASE shop"
maria_sql shop "$(cat scripts/retail/schema.mariadb.sql)"
maria_sql shop "CREATE TABLE heartbeats (id BIGINT PRIMARY KEY, sent_at DATETIME(6))"
# Arrivals of heartbeats in hq, stamped by a trigger.
pg_psql hq <<'SQL'
CREATE TABLE heartbeats (id bigint PRIMARY KEY, sent_at timestamptz NOT NULL);
CREATE TABLE arrivals (id bigint PRIMARY KEY, sent_at timestamptz, arrived_at timestamptz);
CREATE FUNCTION public.arrived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.arrivals VALUES (NEW.id, NEW.sent_at, clock_timestamp()) ON CONFLICT (id) DO NOTHING;
  RETURN NEW;
END $$;
CREATE TRIGGER arrived AFTER INSERT ON heartbeats FOR EACH ROW EXECUTE FUNCTION public.arrived();
SQL
cat > "$WORK/bench.yaml" <<'YAML'
collections:
  heartbeats:
    id: { mode: single_field, field: id }
YAML
cat > "$WORK/.env" <<ENV
CONNECTOR_PROVIDERS=hq=postgres,lite=odbc,maria=odbc
CONNECTOR_HQ_CONNECTION_STRING=$(pg_url hq)
CONNECTOR_LITE_CONNECTION_STRING='Driver={SQLite3};Database=$SQLITE;Timeout=30000;'
CONNECTOR_MARIA_CONNECTION_STRING='$(maria_odbc shop)'
CONNECTOR_STORE=$WORK/store.db
CONNECTOR_MAPPINGS=$ROOT/mappings,$WORK/bench.yaml
DITTO_CLOUD_SYNC_INTERVAL=$INTERVAL
DITTO_CLOUD_SYNC_BATCH_SIZE=5000
ENV
cd "$WORK"
"$CONNECTOR" setup --provider lite > "$WORK/setup-lite.log"
"$CONNECTOR" setup --provider maria > "$WORK/setup-maria.log"

# --- initial sync hq → store, then the fan-out to each ODBC target alone
t0=$(now)
"$CONNECTOR" initial-sync --provider hq > "$WORK/initial.log" 2>&1
t1=$(now)
R[into_store]=$(rate "$ROWS" "$t0" "$t1")
want=$(pg_psql hq -At -c "SELECT count(*) FROM order_items")
fan_out() { # fan_out PROVIDER COUNT-COMMAND
  local provider=$1; shift
  t2=$(now)
  CONNECTOR_INITIAL_SYNC=never "$CONNECTOR" run --provider "$provider" > "$WORK/run-$provider.log" 2>&1 &
  RUN_PID=$!
  until [ "$("$@")" = "$want" ]; do sleep 0.2; kill -0 $RUN_PID; done
  t3=$(now)
  kill -TERM $RUN_PID; wait $RUN_PID || true; RUN_PID=""
  # end to end: the copy into the store plus this fan-out alone
  echo "$(rate "$ROWS" "$t2" "$t3") $(awk -v n="$ROWS" -v c="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v a="$t2" -v b="$t3" 'BEGIN { printf "%.0f", n / (c + b - a) }')"
}
read -r R[fan_lite] R[e2e_lite] <<< "$(fan_out lite sqlite3 "$SQLITE" 'SELECT count(*) FROM order_items')"
read -r R[fan_maria] R[e2e_maria] <<< "$(fan_out maria maria_sql shop 'SELECT count(*) FROM order_items')"
# Everything from the copy (journal rows of the fan-out) is merged before the load starts.
CONNECTOR_PROVIDERS=hq=postgres,lite=odbc CONNECTOR_INITIAL_SYNC=never "$CONNECTOR" run > "$WORK/run.log" 2>&1 &
RUN_PID=$!
# (pruning keeps the last row read)
until [ "$(sqlite3 "$SQLITE" 'SELECT count(*) FROM connector_journal')" -le 1 ]; do sleep 0.5; kill -0 $RUN_PID; done
# … and both sinks have read the whole change log (hq's sink starts from the
# beginning: it never ran during the copy).
caught_up() {
  CONNECTOR_PROVIDERS=hq=postgres,lite=odbc "$CONNECTOR" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(all(p.get("sink_backlog") == 0 for p in s["providers"] if p["name"] in ("hq", "lite")))'
}
t_wait=$(now)
until [ "$(caught_up)" = "True" ]; do sleep 1; kill -0 $RUN_PID; done
R[catch_up]=$(awk -v a="$t_wait" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
sleep 35   # one compaction pass (every 30 s) after the catch-up

# --- polling under a steady write load into SQLite
MAXO=$(pg_psql hq -At -c "SELECT max(order_id) FROM orders")
python3 - "$SQLITE" "$RATE" "$SECONDS_LOAD" "$MAXO" 2> "$WORK/load.txt" <<'PY' || { cat "$WORK/load.txt" >&2; exit 1; }
import random, sqlite3, sys, time, datetime
path, rate, seconds, maxo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path, timeout=30, isolation_level=None)
per_tick, tick = max(1, rate // 100), 0.01   # 100 transactions per second
start = time.monotonic(); n = 0; hb = 0
while time.monotonic() - start < seconds:
    due = start + hb * tick
    time.sleep(max(0.0, due - time.monotonic()))
    db.execute("BEGIN IMMEDIATE")
    for _ in range(per_tick):
        db.execute("UPDATE orders SET status = ? WHERE order_id = ?", (f"load-{n}", random.randint(1, maxo)))
        n += 1
    hb += 1
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    db.execute("INSERT INTO heartbeats VALUES (?, ?)", (hb, stamp))
    db.execute("COMMIT")
print(f"wrote {n} updates and {hb} heartbeats in {time.monotonic() - start:.1f}s", file=sys.stderr)
PY
LAST=$(sqlite3 "$SQLITE" "SELECT max(id) FROM heartbeats")
t4=$(now)
until [ "$(pg_psql hq -At -c "SELECT count(*) FROM arrivals WHERE id = $LAST")" = "1" ]; do sleep 0.05; done
R[drain]=$(awk -v a="$t4" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
# Changes carried per second: the updates written, over the load's time plus
# the drain after it.
read -r WROTE LOAD_S < <(awk '/^wrote/ {print $2, $(NF)}' "$WORK/load.txt" | tr -d s)
R[reached]=$(awk -v n="$WROTE" -v t="$LOAD_S" -v d="${R[drain]}" 'BEGIN { printf "%.0f", n / (t + d) }')
R[lag]=$(pg_psql hq -At -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms / ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms (' || count(*) || ' heartbeats)' FROM (SELECT extract(epoch FROM arrived_at - sent_at) * 1000 AS ms FROM arrivals) x")
RSS=$(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$RUN_PID/status)

cat <<REPORT

== ODBC benchmark, scale $SCALE ($ROWS synced rows), $(nproc) cores, DITTO_CLOUD_SYNC_INTERVAL=$INTERVAL ms
initial sync (rows/s)
  PostgreSQL hq → store                       ${R[into_store]}
  store → SQLite (ODBC) fan-out               ${R[fan_lite]}
  hq → store → SQLite, end to end             ${R[e2e_lite]}   (target ≥ 100,000)
  store → MariaDB (ODBC) fan-out              ${R[fan_maria]}
  hq → store → MariaDB, end to end            ${R[e2e_maria]}
journal polling, SQLite → hq, ${RATE} changes/s offered for ${SECONDS_LOAD}s
  changes carried (written / (load + drain))  ${R[reached]} changes/s ($WROTE updates)
  heartbeat lag p50 / p99                     ${R[lag]}   (target p99 < $((2 * INTERVAL + 100)) ms)
  backlog left when the load stopped          ${R[drain]} s to drain
  (before the load: the sinks took ${R[catch_up]} s to read the change log of the copy)
connector peak RSS during the load: $RSS
REPORT
