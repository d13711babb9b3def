#!/usr/bin/env bash
# GPU checks, run on a machine with an NVIDIA GPU, from release binaries built elsewhere:
#   cargo build --release -p sunray-cli -p sunray-it
#   bash bench/gpu_check.sh target/release
# Shows: GPUs detected from the NVIDIA driver, a GPU task sees exactly its device (CUDA
# itself, through PyTorch, counts it), a CPU task sees none, and GPU tasks never overlap.
set -u
B=${1:-target/release}
export SUNRAY_TMPDIR=/tmp/sunray-gpu-check
rm -rf "$SUNRAY_TMPDIR"
nvidia-smi -L
echo "== sunray start --head (GPUs detected from the driver)"
out=$("$B/sunray" start --head --port 0 --node-ip-address 127.0.0.1 --num-cpus 4) || exit 1
echo "$out"
A=$(echo "$out" | head -1 | awk '{print $4}')
"$B/sunray" status --address "$A"
echo "== CUDA inside tasks"
SUNRAY_ADDRESS=$A "$B/it_driver" cuda_probe
echo "== 3 tasks x 1 GPU (one at a time on a 1-GPU node)"
SUNRAY_ADDRESS=$A "$B/it_driver" intervals 3 1
echo "== 4 tasks x 0.5 GPU (two share the device)"
SUNRAY_ADDRESS=$A "$B/it_driver" intervals 4 0.5
"$B/sunray" stop
echo "== embedded cluster (no address): detects the GPU too"
"$B/it_driver" intervals 2 1
echo "GPU_CHECK_DONE"
