#!/usr/bin/env bash
# Benchmarks casesync side by side with automerge-repo's stock Node sync
# server (bench/peer, pinned by its package-lock.json).
#
#   scripts/bench.sh [LOADGEN SIZE FLAGS...]
#       Installs the peer with `npm ci`, builds casesync and the load
#       generator in release, starts each server on 127.0.0.1 one after the
#       other (each on a fresh temporary data directory, with its default
#       storage: the peer's files, casesync's SQLite store), runs every
#       workload against each and prints a side-by-side table with ratios.
#       Extra flags go to the generator, e.g. `--devices 300 --idle-devices 2000`
#       (see `target/release/loadgen --help`). Results: $BENCH_OUT (default
#       target/bench/).
#
#   BENCH_SERVERS=casesync scripts/bench.sh [FLAGS...]
#       The same against casesync alone (results in $BENCH_OUT/casesync.json).
#
#   scripts/bench.sh --smoke
#       A tiny configuration (a few devices and cases, seconds) against
#       casesync only, with debug builds and no npm. Exits non-zero if the
#       generator reports a failure (a change not acknowledged, a device
#       not converged). It asserts nothing about timings. scripts/test.sh
#       runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=1
  shift
fi
EXTRA=("$@")

step() { printf '\n==> %s\n' "$*" >&2; }

# Ten thousand idle sockets need ten thousand descriptors on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d -t casesync-bench.XXXXXX)
cleanup() {
  for pidfile in "$WORK"/*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A port nobody listens on.
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

if [ "$SMOKE" = 1 ]; then
  step "build (debug): casesync and the load generator"
  cargo build -p casesync-server --bin casesync -p casesync-tests --bin loadgen
  PROFILE_DIR=target/debug
  SIZES=(--devices 6 --cases 3 --edits 3 --idle-devices 12 --idle-secs 1
         --fanout-users 6 --fanout-cases 2 --duration 2
         --cold-changes 300 --cold-writers 2 --reconnect-edits 5 --timeout 60)
  SERVERS=(casesync)
else
  # BENCH_SERVERS=casesync runs casesync alone (no npm, no table).
  read -r -a SERVERS <<<"${BENCH_SERVERS:-casesync peer}"
  if [[ " ${SERVERS[*]} " == *" peer "* ]]; then
    step "the peer: @automerge/automerge-repo-sync-server from bench/peer/package-lock.json"
    (cd bench/peer && npm ci --no-audit --no-fund)
  fi
  step "build (release): casesync and the load generator"
  cargo build --release -p casesync-server --bin casesync -p casesync-tests --bin loadgen
  PROFILE_DIR=target/release
  SIZES=()
fi
CASESYNC="$ROOT/$PROFILE_DIR/casesync"
LOADGEN="$ROOT/$PROFILE_DIR/loadgen"
OUT=${BENCH_OUT:-$ROOT/target/bench}
mkdir -p "$OUT"

# Each server gets a directory with start.sh (starts it in the background,
# waits until it accepts connections, prints its pid) and restart.sh
# (SIGTERM, wait for the exit, start again on the same port), which the
# generator calls for the cold load.
write_scripts() {
  local kind=$1 port=$2 dir="$WORK/$1"
  mkdir -p "$dir"
  local launch
  case "$kind" in
    casesync)
      launch="cd '$dir' && exec '$CASESYNC' serve --listen 127.0.0.1:$port --data-dir '$dir/data'"
      ;;
    peer)
      launch="cd '$dir' && DATA_DIR='$dir/data' PORT=$port exec node '$ROOT/bench/peer/node_modules/@automerge/automerge-repo-sync-server/src/index.js'"
      ;;
  esac
  cat > "$dir/start.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
nohup bash -c "$launch" >>'$dir/server.log' 2>&1 </dev/null &
echo \$! > '$dir/pid'
for _ in \$(seq 1 600); do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    cat '$dir/pid'
    exit 0
  fi
  kill -0 "\$(cat '$dir/pid')" 2>/dev/null || { echo "$kind exited at start:" >&2; tail -20 '$dir/server.log' >&2; exit 1; }
  sleep 0.05
done
echo "$kind did not listen on $port within 30 s" >&2
exit 1
EOF
  cat > "$dir/stop.sh" <<EOF
#!/usr/bin/env bash
pid=\$(cat '$dir/pid' 2>/dev/null) || exit 0
kill -TERM "\$pid" 2>/dev/null || exit 0
for _ in \$(seq 1 600); do
  kill -0 "\$pid" 2>/dev/null || { rm -f '$dir/pid'; exit 0; }
  sleep 0.05
done
kill -KILL "\$pid" 2>/dev/null || true
rm -f '$dir/pid'
EOF
  cat > "$dir/restart.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
'$dir/stop.sh'
exec '$dir/start.sh'
EOF
  chmod +x "$dir/start.sh" "$dir/stop.sh" "$dir/restart.sh"
}

STATUS=0
for kind in "${SERVERS[@]}"; do
  port=$(free_port)
  write_scripts "$kind" "$port"
  dir="$WORK/$kind"
  step "$kind on 127.0.0.1:$port"
  pid=$("$dir/start.sh")
  args=(--server "$kind" --server-pid "$pid" --restart-cmd "$dir/restart.sh"
        --out "$OUT/$kind.json")
  case "$kind" in
    casesync) args+=(--url "ws://127.0.0.1:$port/sync" --data-dir "$dir/data" --casesync-bin "$CASESYNC") ;;
    peer) args+=(--url "ws://127.0.0.1:$port") ;;
  esac
  started=$SECONDS
  rc=0
  "$LOADGEN" "${args[@]}" "${SIZES[@]}" "${EXTRA[@]}" || rc=$?
  echo "$kind: the generator ran for $((SECONDS - started)) s (exit $rc)" >&2
  "$dir/stop.sh"
  if [ "$rc" != 0 ]; then
    STATUS=1
    echo "--- last lines of the $kind log ---" >&2
    tail -20 "$dir/server.log" >&2 || true
  fi
done

if [ "$SMOKE" = 1 ] || [ "${#SERVERS[@]}" -lt 2 ]; then
  if [ "$STATUS" != 0 ]; then
    echo "bench smoke: the load generator reported a failure" >&2
  else
    echo "bench smoke: OK (the generator ran, every change acknowledged, every device converged)" >&2
  fi
  exit "$STATUS"
fi

step "side by side (results in $OUT)"
"$LOADGEN" compare "$OUT/casesync.json" "$OUT/peer.json" | tee "$OUT/table.md"
cat <<'EOF'

casesync acknowledges a change only once it is durably committed (SQLite,
synchronous=FULL, group commit); the peer acknowledges from memory and
writes its files later, without fsync. Ratios are peer ÷ casesync: above 1,
casesync is lower (for every row, lower is better). The generator and the
server share this machine's cores.
EOF
exit "$STATUS"
