#!/usr/bin/env bash
# Times `sunray slurm run` on the Slurm lab (3 nodes in network namespaces, as root):
# job start -> the driver's first line, and the driver's end -> `sunray slurm run`
# returned (every node's processes stopped). Brings the lab up and down.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p sunray-cli
LAB=crates/sunray-it/slurm-lab/lab.sh
trap 'bash $LAB down >/dev/null 2>&1 || true' EXIT
bash $LAB up >/dev/null
J=/tmp/sunray-slurmlab/jobs
cat > $J/bench.sbatch <<EOS
#!/bin/bash
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --output=$J/bench_%j.out
echo "START \$(date +%s.%N)"
$PWD/target/debug/sunray slurm run -- bash -c 'echo "FIRST \$(date +%s.%N)"; echo "LAST \$(date +%s.%N)"'
echo "END \$(date +%s.%N)"
EOS
for i in 1 2 3; do
  id=$(bash $LAB node n1 sbatch --parsable $J/bench.sbatch)
  while [ -n "$(bash $LAB node n1 squeue -h -j "$id")" ]; do sleep 0.05; done
  awk '/^START/{s=$2} /^FIRST/{f=$2} /^LAST/{l=$2} /^END/{e=$2}
       END{printf "job %s: job start -> driver first line %.3f s; driver end -> slurm run returned %.3f s\n", "'"$id"'", f-s, e-l}' $J/bench_$id.out
done
