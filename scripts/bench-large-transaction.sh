#!/usr/bin/env bash
# Large-transaction benchmark: the worker's peak RSS and apply rate while one
# hq transaction updates every order line (400,000 rows at scale 1.0).
#
#   scripts/bench-large-transaction.sh [--scale 1.0] [--binary PATH]
#
# A transaction larger than DITTO_CLOUD_SYNC_BATCH_SIZE waits for its commit
# in a temporary file and is merged from it (connector_core::spill); before,
# it was held in memory (1,066 MB peak at scale 1.0). Not a test: figures
# vary between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=1.0; BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --binary) BIN=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
source scripts/lib/deps.sh
source scripts/lib/pg.sh
source scripts/lib/bench.sh
ensure_build_deps
ensure_postgres
if [ -z "$BIN" ]; then
  cargo build --release --locked -q -p connector-worker
  BIN=$ROOT/target/release/connector
fi
pg_work_dir connector-bigtxn
PORT=$(pg_free_port)
pg_start "$WORK/pg" "$PORT" -c shared_buffers=512MB -c max_wal_size=4GB >/dev/null
for db in hq shop; do
  pg_psql postgres -c "CREATE DATABASE $db" >/dev/null
  pg_psql "$db" -f scripts/retail/schema.sql >/dev/null
done
echo "loading scale $SCALE into hq …"
pg_psql hq -v scale="$SCALE" -f scripts/retail/generate.sql >/dev/null
cat > "$WORK/.env" <<ENV
CONNECTOR_PROVIDERS=hq=postgres,shop=postgres
CONNECTOR_HQ_CONNECTION_STRING=$(pg_url hq)
CONNECTOR_SHOP_CONNECTION_STRING=$(pg_url shop)
CONNECTOR_STORE=$WORK/store.db
CONNECTOR_MAPPINGS=$ROOT/mappings
DITTO_CLOUD_SYNC_INTERVAL=50
DITTO_CLOUD_SYNC_BATCH_SIZE=5000
ENV
cd "$WORK"
"$BIN" initial-sync --provider hq > "$WORK/initial.log" 2>&1
"$BIN" run > "$WORK/run.log" 2>&1 &
RUN_PID=$!
rows=$(pg_psql hq -At -c "SELECT count(*) FROM order_items")
until [ "$(pg_psql shop -At -c 'SELECT count(*) FROM order_items')" = "$rows" ]; do sleep 0.5; kill -0 $RUN_PID; done
sleep 5
echo "== one transaction updating $rows order lines, scale $SCALE, 2 cores"
echo "  worker peak RSS after the initial fan-out   $(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$RUN_PID/status)"
t0=$(now)
pg_psql hq -c "UPDATE order_items SET quantity = quantity + 1" >/dev/null
t1=$(now)
want=$(pg_psql hq -At -c 'SELECT sum(quantity) FROM order_items')
until [ "$(pg_psql shop -At -c 'SELECT sum(quantity) FROM order_items')" = "$want" ]; do sleep 0.5; kill -0 $RUN_PID; done
t2=$(now)
echo "  hq commit → every row in shop               $(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.1f s", b - a}') ($(rate "$rows" "$t1" "$t2") changes/s; the UPDATE itself took $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f s", b - a}'))"
echo "  worker peak RSS                             $(awk '/VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$RUN_PID/status)"
echo "  held on disk until its commit               $(grep -c 'holding it on disk' "$WORK/run.log" || true) transaction(s)"
