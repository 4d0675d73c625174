#!/usr/bin/env bash
# The main job, end to end on this machine: two PostgreSQL databases (hq and
# shop) kept in sync through the connector's store.
#
#   scripts/demo.sh [--scale 1.0]     (0.05 is a quick run)
#
# Installs what is missing, builds the connector, starts a private PostgreSQL
# cluster on a free port, loads the retail sample into hq, runs initial-sync
# and the fleet, makes a change in each database and shows it arriving in the
# other, prints `connector status` and `connector verify`, and stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=1.0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

source scripts/lib/deps.sh
source scripts/lib/pg.sh
ensure_build_deps
ensure_postgres
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building connector (release)"
cargo build --release --locked -q -p connector-worker
CONNECTOR=$ROOT/target/release/connector

pg_work_dir connector-demo

step "starting a private PostgreSQL cluster"
PORT=$(pg_free_port)
pg_start "$WORK/pg" "$PORT"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (data in $WORK/pg)"
for db in hq shop; do
  pg_psql postgres -c "CREATE DATABASE $db"
  pg_psql "$db" -f scripts/retail/schema.sql
done

step "loading the retail sample into hq (scale $SCALE)"
time pg_psql hq -v scale="$SCALE" -f scripts/retail/generate.sql
pg_psql hq -At -c "SELECT 'hq: ' || (SELECT count(*) FROM orders) || ' orders, ' || (SELECT count(*) FROM order_items) || ' order items, ' || (SELECT count(*) FROM customers) || ' customers'"

cat > "$WORK/.env" <<ENV
CONNECTOR_PROVIDERS=hq=postgres,shop=postgres
CONNECTOR_HQ_CONNECTION_STRING=$(pg_url hq)
CONNECTOR_SHOP_CONNECTION_STRING=$(pg_url shop)
CONNECTOR_STORE=$WORK/store.db
CONNECTOR_MAPPINGS=$ROOT/mappings
DITTO_CLOUD_SYNC_INTERVAL=200
CONNECTOR_HTTP_ADDR=127.0.0.1:$(pg_free_port)
ENV
cd "$WORK"

step "connector mappings check"
"$CONNECTOR" mappings check
step "connector test-connection"
"$CONNECTOR" test-connection
step "connector setup (publication, replica identity, slot)"
"$CONNECTOR" setup --provider shop

step "connector initial-sync --provider hq"
"$CONNECTOR" initial-sync --provider hq

step "connector run (in the background): the store fans hq's rows out to shop"
"$CONNECTOR" run > "$WORK/run.log" 2>&1 &
RUN_PID=$!
want=$(pg_psql hq -At -c "SELECT count(*) FROM orders")
start=$(date +%s)
until [ "$(pg_psql shop -At -c 'SELECT count(*) FROM orders')" = "$want" ]; do
  sleep 1
  if ! kill -0 "$RUN_PID" 2>/dev/null; then cat "$WORK/run.log"; exit 1; fi
  printf '\rshop: %s / %s orders' "$(pg_psql shop -At -c 'SELECT count(*) FROM orders')" "$want"
done
echo; echo "shop holds all $want orders after $(( $(date +%s) - start )) s"

wait_for() { # wait_for DB SQL EXPECTED
  for _ in $(seq 1 100); do
    [ "$(pg_psql "$1" -At -c "$2")" = "$3" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1: $2 = $3" >&2; tail -20 "$WORK/run.log" >&2; exit 1
}

step "a change in hq arrives in shop"
pg_psql hq -c "UPDATE orders SET status = 'paid-in-hq' WHERE order_id = 1"
t0=$(date +%s%N); wait_for shop "SELECT status FROM orders WHERE order_id = 1" "paid-in-hq"
echo "hq: order 1 status = paid-in-hq  →  shop: $(pg_psql shop -At -c 'SELECT status FROM orders WHERE order_id = 1')  ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"

step "a change in shop arrives in hq"
pg_psql shop -c "INSERT INTO store_order_numbers VALUES (3, 17, '2024-05-01 10:00:00+00', 'made in shop')"
t0=$(date +%s%N); wait_for hq "SELECT note FROM store_order_numbers WHERE store_id = 3 AND order_no = 17" "made in shop"
echo "shop: store_order_numbers (3, 17) inserted  →  hq: $(pg_psql hq -At -c "SELECT note FROM store_order_numbers WHERE store_id = 3 AND order_no = 17")  ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"

step "both databases sell the same item at once (a counter)"
ID=$(pg_psql hq -At -c "SELECT id FROM inventory ORDER BY id LIMIT 1")
Q=$(pg_psql hq -At -c "SELECT quantity FROM inventory WHERE id = '$ID'")
pg_psql hq -c "UPDATE inventory SET quantity = quantity - 1 WHERE id = '$ID'"
pg_psql shop -c "UPDATE inventory SET quantity = quantity - 2 WHERE id = '$ID'"
wait_for hq "SELECT quantity FROM inventory WHERE id = '$ID'" "$((Q - 3))"
wait_for shop "SELECT quantity FROM inventory WHERE id = '$ID'" "$((Q - 3))"
echo "quantity was $Q; hq sold 1, shop sold 2; both now hold $((Q - 3))"

step "connector status"
"$CONNECTOR" status

step "connector verify"
"$CONNECTOR" verify

step "stopping (SIGTERM finishes the batch in flight)"
kill -TERM "$RUN_PID"
code=0; wait "$RUN_PID" || code=$?; RUN_PID=""
if [ "$code" -ne 0 ]; then
  echo "connector exited $code; its log:" >&2; tail -n 30 "$WORK/run.log" >&2; exit 1
fi
echo "connector exited 0"
