#!/usr/bin/env bash
# Builds everything and starts the server on the embedded SQLite default
# (./data, 127.0.0.1:8080), serving the field app at /app/ and the admin
# console at /admin/. This is the README's run command. Extra arguments go
# to `casesync serve` (e.g. --listen 0.0.0.0:8080).
#
# It installs what the build needs when missing (the wasm target,
# wasm-bindgen-cli at the pinned version, npm packages): see
# scripts/build-wasm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-app.sh
cargo build --release -p casesync-server --bin casesync
exec target/release/casesync serve --app-dir client-wasm/dist "$@"
