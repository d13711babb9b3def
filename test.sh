#!/usr/bin/env bash
# Runs every test of the workspace: unit tests of the pure cores, and integration tests
# that start real sunray processes on loopback addresses (127.0.0.1-3).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --locked "$@"
