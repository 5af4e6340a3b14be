#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU, PyTorch (python3 with torch 2.11 + CUDA) and a
# dp-bench on PATH (e.g. through ../shared/gpu/bundle.sh's on-gpu.sh, which also brings mpiexec):
#   bash .gpu/on-gpu.sh bash scripts/gpu_checks.sh OUT_DIR
# Executables carried along (through BUNDLE_EXTRA), each optional, name further checks:
#   PRECISION_TEST=precision-HASH TRAIN_STEP_BENCH=train_step-HASH DATA_PARALLEL_BENCH=data_parallel-HASH
# scripts/gpu_pack.sh packs all three and names them in .gpu/env.sh:
#   source .gpu/env.sh && bash .gpu/on-gpu.sh bash scripts/gpu_checks.sh OUT_DIR
# Each check writes its output under OUT_DIR and one line to OUT_DIR/checks.txt; the script goes
# on after a failed check and exits 1 if any failed. The checks run most telling first, so a call
# cut short still brings back the numbers that matter. Expected (never yet run there): about five
# minutes on one H200, and BENCH_BUDGET more for each bench.
#  1. one rank in fp32, gpt2 preset, batch 64, 1280 examples, 3 epochs: the NCCL data plane joins
#     a one-rank communicator; tokens/s and MFU inputs in the records
#  2. `cargo bench`'s data_parallel on the GPUs, fp32 against PyTorch eager and bf16 against eager
#     and compiled PyTorch, each within BENCH_BUDGET (default 2m), the project root being this
#     script's parent (DATA_PARALLEL_BENCH; its reports under target/criterion there)
#  3. the same one-rank run in tf32 and bf16
#  4. the PyTorch reference on the same token ids, eager, in each precision, and compiled in bf16
#  5. refusals on one GPU: two NCCL ranks on it (exit 2), and two ranks summing through host
#     memory instead (--allreduce mpi, runs); out of GPU memory (exit 2, one line)
#  6. bf16 against fp32 on the GPU (PRECISION_TEST, tests/precision.rs's executable)
#  7. the AdamW update of gpt2's parameters on the GPU: libtorch's fused kernel (dp-bench's) against
#     nine libtorch ops (TRAIN_STEP_BENCH)
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR (see the comment at its top)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
failed=0
check() { # check NAME EXPECTED_STATUS EXPECTED_TEXT COMMAND... (text "" for any)
  local name=$1 want=$2 text=$3; shift 3
  local start=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local got=$?
  local verdict=ok
  [ "$got" = "$want" ] || { verdict=FAILED; failed=1; }
  [ -z "$text" ] || grep -qF -- "$text" "$out/$name.log" || { verdict=FAILED; failed=1; }
  echo "$verdict $name (exit $got, expected $want, $((SECONDS - start)) s): $(tail -n 1 "$out/$name.log")" | tee -a "$out/checks.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python3 -c 'import torch; print(torch.__version__, torch.cuda.nccl.version())' >> "$out/gpu.txt" 2>&1
work="--device cuda --preset gpt2 --batch-size 64 --train-examples 1280 --n-epochs 3 --benchmark-only --overwrite"
one_rank() { check "dp-bench-$1" 0 "gradients summed by NCCL" dp-bench $work --precision "$1" --workdir "$out/runs/dp-bench-$1"; }
one_rank fp32
if [ -n "${DATA_PARALLEL_BENCH:-}" ]; then
  bench_env=(env DP_BENCH_ROOT="$(dirname "$here")" DP_BENCH_BIN="$(command -v dp-bench)" DP_BENCH_PYTHON=python3)
  for p in fp32 bf16; do
    extra=(); [ "$p" = bf16 ] && extra=(--reference-compile)
    touch "$out/bench-$p.started"
    check "bench-$p" 0 "vs pytorch-eager" "${bench_env[@]}" "$DATA_PARALLEL_BENCH" --bench --device cuda \
      --precision "$p" --time-budget "${BENCH_BUDGET:-2m}" "${extra[@]}"
    for f in summary.json table.md; do # what this run wrote, not an earlier run's
      f_in="$(dirname "$here")/target/criterion/data_parallel/$f"
      [ "$f_in" -nt "$out/bench-$p.started" ] && cp "$f_in" "$out/bench-$p-$f"
    done
  done
fi
one_rank tf32
one_rank bf16
check export 0 "" dp-bench export-examples --workdir "$out/runs/dp-bench-fp32" --out "$out/examples.json"
for p in fp32 tf32 bf16; do
  check "pytorch-eager-$p" 0 "" python3 "$here/torch_reference.py" --examples "$out/examples.json" \
    --template "$out/runs/dp-bench-$p/run.json" --device cuda --precision "$p" --batch-size 64 \
    --n-epochs 3 --workdir "$out/runs/pytorch-eager-$p"
done
check pytorch-compiled-bf16 0 "" python3 "$here/torch_reference.py" --examples "$out/examples.json" \
  --template "$out/runs/dp-bench-bf16/run.json" --device cuda --precision bf16 --compile \
  --batch-size 64 --n-epochs 3 --workdir "$out/runs/pytorch-compiled-bf16"
small="--device cuda --preset tiny --batch-size 32 --train-examples 256 --n-epochs 2 --benchmark-only --overwrite"
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -le 1 ]; then
  check two-nccl-ranks-on-one-gpu 2 "would share GPU 0" mpiexec -n 2 dp-bench $small --allreduce nccl --workdir "$out/runs/refused"
  check two-staged-ranks-on-one-gpu 0 "" mpiexec -n 2 dp-bench $small --allreduce mpi --workdir "$out/runs/staged"
else
  check two-nccl-ranks 0 "gradients summed by NCCL" mpiexec -n 2 dp-bench $small --allreduce nccl --workdir "$out/runs/nccl2"
fi
check out-of-memory 2 "ran out of device memory" dp-bench --device cuda --preset gpt2 --batch-size 8192 --train-examples 8192 \
  --n-epochs 1 --benchmark-only --overwrite --workdir "$out/runs/oom"
if [ -n "${PRECISION_TEST:-}" ]; then
  check bf16-numerics 0 "" "$PRECISION_TEST" --nocapture
fi
if [ -n "${TRAIN_STEP_BENCH:-}" ]; then
  check adamw-update 0 "adamw_libtorch_ops/gpt2" env DP_BENCH_DEVICE=cuda "$TRAIN_STEP_BENCH" --bench adamw
fi
for r in "$out"/runs/*/; do
  [ -f "$r/run.json" ] && dp-bench compare "$r" --warmup 1 --out "$r/report" > "$r/compare.txt" 2>&1
done
exit $failed
