#!/usr/bin/env bash
# PostgreSQL benchmark: the connector against PostgreSQL's own logical
# replication, pgloader and a raw COPY pipe, on the same data, in one run.
#
#   scripts/bench-postgres.sh [--scale 1.0] [--backlog 100000] [--seconds 30] [--rate TPS]
#
# Prints, for the retail dataset (scale 1.0 = 653,620 synced rows):
#   initial sync rows/s hq → store → shop      (connector)
#   initial copy rows/s                        (native subscription, pgloader, COPY pipe)
#   commit-in-hq → commit-in-shop p50/p99 latency under pgbench single-row
#     UPDATEs (pgbench -n -c 4 -j 2, as fast as it goes, or --rate TPS:
#     issue #3 states its load as ~3,000 tps), measured with heartbeat rows stamped
#     with clock_timestamp() on insert and on arrival (same host clock), once
#     the fan-out's echoes are read and its change log compacted
#   apply rate after a backlog of N such transactions (connector, native
#     subscription, and pg_recvlogical alone draining it)
#   the worker's peak RSS (VmHWM)
# Not a test: numbers vary 5–15 % between runs on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=1.0; BACKLOG=100000; SECONDS_LOAD=30; RATE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --backlog) BACKLOG=$2; shift 2 ;;
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
source scripts/lib/deps.sh
source scripts/lib/pg.sh
source scripts/lib/bench.sh
ensure_build_deps
ensure_postgres
apt_install postgresql-contrib pgloader
cargo build --release --locked -q -p connector-worker
CONNECTOR=$ROOT/target/release/connector
pg_work_dir connector-bench
declare -A R

PORT=$(pg_free_port)
pg_start "$WORK/pg" "$PORT" -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min
SYNCED="stores customers categories products inventory orders order_items store_order_numbers"
new_db() { pg_psql postgres -c "CREATE DATABASE $1"; pg_psql "$1" -f scripts/retail/schema.sql; }
for db in hq shop native loaded piped; do new_db "$db"; done
# Latency probes: heartbeats are synced; arrivals are recorded by a trigger
# in shop/native into a table nobody syncs.
for db in hq shop native; do
  pg_psql "$db" -c "CREATE TABLE heartbeats (id bigint PRIMARY KEY, sent_at timestamptz NOT NULL)"
done
for db in shop native; do
  pg_psql "$db" <<'SQL'
CREATE TABLE arrivals (id bigint PRIMARY KEY, sent_at timestamptz, arrived_at timestamptz);
CREATE FUNCTION public.arrived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.arrivals VALUES (NEW.id, NEW.sent_at, clock_timestamp()) ON CONFLICT (id) DO NOTHING;
  RETURN NEW;
END $$;
CREATE TRIGGER arrived AFTER INSERT ON heartbeats FOR EACH ROW EXECUTE FUNCTION public.arrived();
ALTER TABLE heartbeats ENABLE ALWAYS TRIGGER arrived;
SQL
done
echo "loading scale $SCALE into hq …"
pg_psql hq -v scale="$SCALE" -f scripts/retail/generate.sql
ROWS=0; for t in $SYNCED; do ROWS=$((ROWS + $(pg_psql hq -At -c "SELECT count(*) FROM $t"))); done
echo "hq: $ROWS synced rows"

# --- raw COPY pipe
t0=$(now)
for t in $SYNCED; do
  pg_psql hq -c "COPY $t TO STDOUT" | pg_psql piped -c "COPY $t FROM STDIN"
done
R[copy]=$(rate "$ROWS" "$t0" "$(now)")

# --- pgloader
cat > "$WORK/load.pgl" <<PGL
LOAD DATABASE FROM $(pg_url hq) INTO $(pg_url loaded)
WITH data only, truncate, workers = 2, concurrency = 1
INCLUDING ONLY TABLE NAMES MATCHING $(for t in $SYNCED; do printf "'%s', " "$t"; done | sed 's/, $//') IN SCHEMA 'public';
PGL
t0=$(now)
if pgloader "$WORK/load.pgl" > "$WORK/pgloader.log" 2>&1; then
  R[pgloader]=$(rate "$ROWS" "$t0" "$(now)")
else
  R[pgloader]="failed (see log)"; tail -5 "$WORK/pgloader.log"
fi

# --- native logical replication: initial copy
pg_psql hq -c "CREATE PUBLICATION bench_native FOR TABLE $(echo $SYNCED | sed 's/ /, /g'), heartbeats"
# (On one cluster CREATE SUBSCRIPTION cannot create its own slot: it would
# wait for itself. The slot is made first.)
pg_psql hq -c "SELECT pg_create_logical_replication_slot('bench_native', 'pgoutput')" > /dev/null
t0=$(now)
pg_psql native -c "CREATE SUBSCRIPTION bench_native CONNECTION '$(pg_url hq)' PUBLICATION bench_native WITH (slot_name = 'bench_native', create_slot = false)"
until [ "$(pg_psql native -At -c "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = "0" ]; do sleep 0.2; done
R[native_copy]=$(rate "$ROWS" "$t0" "$(now)")

# --- the connector: initial sync hq → store → shop
cat > "$WORK/bench.yaml" <<'YAML'
collections:
  heartbeats:
    id: { mode: single_field, field: id }
YAML
cat > "$WORK/.env" <<ENV
CONNECTOR_PROVIDERS=hq=postgres,shop=postgres
CONNECTOR_HQ_CONNECTION_STRING=$(pg_url hq)
CONNECTOR_SHOP_CONNECTION_STRING=$(pg_url shop)
CONNECTOR_STORE=$WORK/store.db
CONNECTOR_MAPPINGS=$ROOT/mappings,$WORK/bench.yaml
DITTO_CLOUD_SYNC_INTERVAL=50
DITTO_CLOUD_SYNC_BATCH_SIZE=5000
ENV
cd "$WORK"
t0=$(now)
"$CONNECTOR" initial-sync --provider hq > "$WORK/initial.log" 2>&1
t1=$(now)
"$CONNECTOR" run > "$WORK/run.log" 2>&1 &
RUN_PID=$!
want=$(pg_psql hq -At -c "SELECT count(*) FROM order_items")
until [ "$(pg_psql shop -At -c 'SELECT count(*) FROM order_items')" = "$want" ]; do sleep 0.2; kill -0 $RUN_PID; done
t2=$(now)
RSS_FANOUT=$(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$RUN_PID/status)
R[into_store]=$(rate "$ROWS" "$t0" "$t1")
R[end_to_end]=$(rate "$ROWS" "$t0" "$t2")
# Latency is a steady-state figure: wait until shop's echoes of the fan-out
# are read and the store has compacted the copy's change log, as it is a
# few seconds after any initial sync (printed as "settled after").
SHOP_END=$(pg_psql shop -At -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 600); do
  drained=$(pg_psql shop -At -c "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$SHOP_END'), false) FROM pg_replication_slots WHERE slot_name = 'connector_shop'")
  log=$(sqlite3 "$WORK/store.db" "PRAGMA busy_timeout = 5000; SELECT count(*) FROM change_log" | tail -1)
  [ "$drained" = "t" ] && [ "$log" -lt 5000 ] && break
  sleep 0.2; kill -0 $RUN_PID
done
R[settled]=$(awk -v a="$t2" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')

# --- streaming latency under pgbench load
cat > "$WORK/update.sql" <<SQL
\set id random(1, $(pg_psql hq -At -c "SELECT max(order_id) FROM orders"))
UPDATE orders SET total = total + 1 WHERE order_id = :id;
SQL
heartbeats() { # heartbeats FIRST COUNT: one every 10 ms
  for i in $(seq "$1" $(($1 + $2 - 1))); do echo "INSERT INTO heartbeats VALUES ($i, clock_timestamp());"; echo "SELECT pg_sleep(0.01);"; done | pg_psql hq > /dev/null
}
latency() { # latency DB FIRST LAST
  pg_psql "$1" -At -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms / ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms (' || count(*) || ' probes)' FROM (SELECT extract(epoch FROM arrived_at - sent_at) * 1000 AS ms FROM arrivals WHERE id BETWEEN $2 AND $3) x"
}
PROBES=$((SECONDS_LOAD * 60))
pgbench -n -c 4 -j 2 ${RATE:+-R "$RATE"} -T "$SECONDS_LOAD" -f "$WORK/update.sql" -h 127.0.0.1 -p "$PORT" -U postgres hq > "$WORK/pgbench.log" 2>&1 &
BENCH=$!
heartbeats 1 "$PROBES" &
HB=$!
wait $BENCH; wait $HB
R[tps]=$(grep -oE 'tps = [0-9.]+' "$WORK/pgbench.log" | head -1 | awk '{printf "%.0f", $3}')
sleep 3
R[lat_connector]=$(latency shop 1 "$PROBES")
R[lat_native]=$(latency native 1 "$PROBES")

# --- backlog: stop both consumers, queue N transactions, measure catch-up
kill -TERM $RUN_PID; wait $RUN_PID; RUN_PID=""
pg_psql native -c "ALTER SUBSCRIPTION bench_native DISABLE"
# A third consumer of the same backlog: pg_recvlogical alone (decoding and
# sending, no apply), the floor any logical consumer starts from.
pg_psql hq -c "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')" > /dev/null
sleep 1
pgbench -n -c 4 -j 2 -t $((BACKLOG / 4)) -f "$WORK/update.sql" -h 127.0.0.1 -p "$PORT" -U postgres hq > "$WORK/backlog.log" 2>&1
MARK=$((PROBES + 1000))
pg_psql hq -c "INSERT INTO heartbeats VALUES ($MARK, clock_timestamp())"
t0=$(now)
"$CONNECTOR" run > "$WORK/run2.log" 2>&1 &
RUN_PID=$!
until [ "$(pg_psql shop -At -c "SELECT count(*) FROM arrivals WHERE id = $MARK")" = "1" ]; do sleep 0.05; done
R[backlog_connector]=$(rate "$BACKLOG" "$t0" "$(now)")
RSS=$(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$RUN_PID/status)
t0=$(now)
pg_psql native -c "ALTER SUBSCRIPTION bench_native ENABLE"
until [ "$(pg_psql native -At -c "SELECT count(*) FROM arrivals WHERE id = $MARK")" = "1" ]; do sleep 0.05; done
R[backlog_native]=$(rate "$BACKLOG" "$t0" "$(now)")
END_LSN=$(pg_psql hq -At -c "SELECT pg_current_wal_lsn()")
t0=$(now)
"$PG_BIN/pg_recvlogical" -d "$(pg_url hq)" --slot bench_recv --start --endpos "$END_LSN" \
  -o proto_version=1 -o publication_names=bench_native -f /dev/null
R[backlog_recvlogical]=$(rate "$BACKLOG" "$t0" "$(now)")
pg_psql hq -c "SELECT pg_drop_replication_slot('bench_recv')" > /dev/null
RSS_INITIAL=$(grep -oE 'peak RSS [0-9.]+ MB' "$WORK/initial.log" | awk '{print $3 " MB"}' || true)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }
p99() { echo "$1" | awk -F' / ' '{print $2}' | awk '{print $1}'; }
cat <<REPORT

== PostgreSQL benchmark, scale $SCALE ($ROWS synced rows), $(nproc) cores
initial copy (rows/s)
  raw COPY pipe                         ${R[copy]}
  pgloader                              ${R[pgloader]}
  native subscription (initial copy)    ${R[native_copy]}
  connector hq → store                  ${R[into_store]}   ($(ratio "${R[into_store]}" "${R[copy]}") COPY pipe)
  connector hq → store → shop           ${R[end_to_end]}   ($(ratio "${R[end_to_end]}" "${R[copy]}") COPY pipe, $(ratio "${R[end_to_end]}" "${R[pgloader]}") pgloader, $(ratio "${R[end_to_end]}" "${R[native_copy]}") native)
streaming under pgbench single-row UPDATEs (-c 4 -j 2${RATE:+ -R $RATE}, ${R[tps]} tps, ${SECONDS_LOAD}s;
  started once the fan-out's echoes were read and its log compacted, ${R[settled]} s after it)
  commit→commit p50 / p99, connector    ${R[lat_connector]}   (p99 $(ratio "$(p99 "${R[lat_connector]}")" "$(p99 "${R[lat_native]}")") native)
  commit→commit p50 / p99, native       ${R[lat_native]}
backlog of $BACKLOG transactions (changes/s)
  connector                             ${R[backlog_connector]}   ($(ratio "${R[backlog_connector]}" "${R[backlog_native]}") native)
  native subscription                   ${R[backlog_native]}
  pg_recvlogical alone (no apply)       ${R[backlog_recvlogical]}   (connector $(ratio "${R[backlog_connector]}" "${R[backlog_recvlogical]}") of it)
connector peak RSS: initial-sync $RSS_INITIAL, run during the full fan-out $RSS_FANOUT, run through the backlog $RSS
REPORT
