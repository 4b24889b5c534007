#!/usr/bin/env bash
# Plain multi-node launch (no scheduler): run once on every machine with its rank.
#   MAIN_ADDR=10.0.0.1 NUM_MACHINES=2 MACHINE_RANK=0 GPUS_PER_NODE=8 \
#     launch/multinode.sh accelerate_configs/multi_node.yaml recipes/qwen2.5-7b-zero3-full.yaml [--key value ...]
set -euo pipefail
config=$1; recipe=$2; shift 2
: "${MAIN_ADDR:?set MAIN_ADDR to the rank-0 machine}" "${NUM_MACHINES:?}" "${MACHINE_RANK:?}"
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
MAIN_PORT=${MAIN_PORT:-29500}
here=$(cd "$(dirname "$0")" && pwd)
exec accelerate launch --config_file "$config" \
  --num_machines "$NUM_MACHINES" --machine_rank "$MACHINE_RANK" \
  --num_processes $((NUM_MACHINES * GPUS_PER_NODE)) \
  --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" \
  ${ACCELERATE_EXTRA_ARGS:-} \
  "$here/train.py" "$recipe" "$@"
