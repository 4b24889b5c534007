#!/usr/bin/env bash
# One device call: GPU unit checks, throughput benchmark, support-matrix verification.
# Run from the repo root on the GPU machine with .whl/ (../shared/device/wheels.sh) and .gpu/
# (tokenizer dir `tok/` + the shared HH-RLHF file) carried. Everything lands in $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=$PWD:/tmp/site || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false REWARDKIT_CACHE=/tmp/rkcache
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, accelerate, peft, trl, deepspeed, inspect; print(torch.__version__, transformers.__version__, accelerate.__version__, peft.__version__, trl.__version__, deepspeed.__version__); from torch.nn.attention.varlen import varlen_attn; print(inspect.signature(varlen_attn))"
} 2>&1 | tee "$OUT/env.txt"
STAGES=${STAGES:-"unit bench matrix flex"}
for stage in $STAGES; do
  echo "=== $stage $(date +%T)"
  case $stage in
    unit) timeout 45 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "varlen" 2>&1 | tail -15 ;;
    bench) timeout 120 python3 bench/throughput.py --shapes smollm2-135m qwen2.5-1.5b --attn varlen --steps 16 --warmup 4 \
             --tokenizer .gpu/tok --data .gpu/hh-rlhf-harmless-base-test.1-1800.jsonl.gz --profile "$OUT/prof" \
             --out "$OUT/bench.json" 2>&1 | grep -v -i "warn" | tail -14 ;;
    matrix) timeout 110 python3 tests/gpu/run_all.py --random_base .gpu/tok --steps 10 --parallel 7 \
              --out "$OUT/gpu_results.json" --log "$OUT/matrix.log" 2>&1 | tail -12 ;;
    flex) timeout 200 python3 bench/throughput.py --shapes smollm2-135m qwen2.5-1.5b --attn flex dense --no_stock --steps 20 --warmup 5 \
            --tokenizer .gpu/tok --data .gpu/hh-rlhf-harmless-base-test.1-1800.jsonl.gz \
            --out "$OUT/bench_flex.json" 2>&1 | grep -v -i "warn" | tail -8 ;;
  esac
done
(cd "$OUT" && [ -d prof ] && tar czf prof.tgz prof && rm -rf prof)
echo "=== done $(date +%T)"
