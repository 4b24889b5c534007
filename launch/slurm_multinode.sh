#!/usr/bin/env bash
# SLURM multi-node training: one task per node, accelerate starts the GPU processes.
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_multinode.sh accelerate_configs/multi_node.yaml recipes/x.yaml
#SBATCH --job-name=rewardkit
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
config=${1:?accelerate config}; recipe=${2:?recipe}; shift 2
export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PORT=${MAIN_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export NUM_MACHINES=$SLURM_NNODES
export GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-8}}
here=$(cd "$(dirname "$0")" && pwd)
# Each node's task reads its rank from SLURM_NODEID inside srun.
srun --kill-on-bad-exit=1 bash -c "MACHINE_RANK=\$SLURM_NODEID exec '$here/multinode.sh' '$config' '$recipe' $*"
