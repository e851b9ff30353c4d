#!/usr/bin/env bash
# Builds everything and starts the server on the embedded SQLite default
# (./data, 127.0.0.1:8080). This is the README's run command. Extra
# arguments go to `casesync serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p casesync-server --bin casesync
exec target/release/casesync serve "$@"
