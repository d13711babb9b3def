#!/usr/bin/env bash
# Runs every test of the workspace: unit tests of the pure cores, integration tests that
# start real sunray processes on loopback addresses (127.0.0.1-3), and the Slurm tests,
# which bring up a 3-node Slurm lab in network namespaces (as root; it installs
# slurm-wlm and munge when missing) and which this script tears down afterwards.
set -euo pipefail
cd "$(dirname "$0")"
trap 'bash crates/sunray-it/slurm-lab/lab.sh down >/dev/null 2>&1 || true' EXIT
cargo test --workspace --locked "$@"
