#!/usr/bin/env bash
# Runs every test of casesync. This is the README's test command, and
# .ci/run calls exactly this. It installs what it needs (the wasm target,
# npm packages) so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# CI builds once, from a clean clone: incremental caches only cost disk
# (4.3 GB of a 22 GB run before the profiles in Cargo.toml were slimmed;
# a CI run once failed with "No space left on device").
export CARGO_INCREMENTAL=0
df -h . | sed 's/^/disk at start: /'
trap 'df -h . | sed "s/^/disk at exit: /"' EXIT

step "toolchain: wasm32 target"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

step "format"
cargo fmt --all --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "sync-core is pure: no IO/runtime crates in its dependency tree"
forbidden='^(tokio|rusqlite|axum|wasm-bindgen|hyper|mio) '
if cargo tree -p sync-core -e normal --prefix none | grep -E "$forbidden"; then
  echo "sync-core must not depend on the crates above" >&2
  exit 1
fi
if cargo tree -p sync-core -e normal --prefix none --depth 1 --target wasm32-unknown-unknown \
    | grep -E "$forbidden"; then
  echo "sync-core must not depend directly on the crates above (wasm32)" >&2
  exit 1
fi

step "sync-core builds for wasm32-unknown-unknown"
cargo build -p sync-core --target wasm32-unknown-unknown

if [ -f tests/js/package-lock.json ]; then
  step "npm packages for the interop tests (from package-lock.json)"
  (cd tests/js && npm ci --no-audit --no-fund)
fi

step "FUSE for the power-loss test (tests/tests/power_loss.rs mounts a filesystem)"
if ! command -v fusermount3 >/dev/null; then
  apt-get update
  apt-get install -y fuse3
fi

step "build the server binary (the end-to-end tests start it as a process)"
cargo build -p casesync-server --bin casesync
export CASESYNC_BIN="$PWD/target/debug/casesync"

step "cargo test (workspace)"
cargo test --workspace
scripts/bench.sh --smoke  # the load generator still works (tiny sizes, no timings asserted)

step "vendored automerge: the patched change graph and change cache, and the sync tests (vendor/README.md)"
cargo test --locked --manifest-path vendor/automerge/Cargo.toml --lib -- change_graph:: change_cache:: sync::

step "fuzz smoke run: every target for about 20 s (fixed seed), after replaying its corpus and crashers"
# Installs the nightly toolchain and cargo-fuzz when missing. Long runs:
# scripts/fuzz.sh 3600 (FUZZING.md).
FUZZ_SEED=1 ./scripts/fuzz.sh 20

step "browser: Debian's chromium (Playwright's own download does not work here)"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  apt-get install -y chromium
fi

step "client-wasm: build the wasm and the field app from scratch"
./scripts/build-app.sh

step "client-wasm: binding tests (Node) and browser tests (Playwright + chromium)"
(cd client-wasm && npm ci --no-audit --no-fund && node --test test/ e2e/)
