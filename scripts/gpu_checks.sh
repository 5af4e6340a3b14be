#!/usr/bin/env bash
# The GPU checks, in parts that each fit one device call, on a machine with an NVIDIA GPU,
# PyTorch (python3 with torch 2.11 + CUDA) and a dp-bench on PATH (e.g. through
# ../shared/gpu/bundle.sh's on-gpu.sh, which also brings mpiexec):
#   bash .gpu/on-gpu.sh bash scripts/gpu_checks.sh OUT_DIR PART      (PART: 1, 2, 3 or all)
# Executables carried along (through BUNDLE_EXTRA), each optional, name further checks:
#   PRECISION_TEST=precision-HASH TRAIN_STEP_BENCH=train_step-HASH DATA_PARALLEL_BENCH=data_parallel-HASH
# scripts/gpu_pack.sh packs all three and names them in .gpu/env.sh:
#   source .gpu/env.sh && bash .gpu/on-gpu.sh bash scripts/gpu_checks.sh OUT_DIR 1
# Each check writes its output under OUT_DIR and one line to OUT_DIR/checks.txt as soon as it
# ends, so a call cut short brings back what finished; the part goes on after a failed check and
# exits 1 if any failed. Most telling first. Expected GPU time (estimates for one H200; never yet
# run there), start-up of the machine not included:
#   part 1, about 4.5 min: one rank in fp32 (gpt2 preset, batch 64, 1280 examples, 3 epochs: the
#     NCCL data plane joins a one-rank communicator; tokens/s and MFU inputs in the records), then
#     `cargo bench`'s data_parallel on the GPUs, fp32 and bf16 against PyTorch eager, each within
#     BENCH_BUDGET (default 1m) (DATA_PARALLEL_BENCH; the project root is this script's parent)
#   part 2, about 3.5 min: the same one-rank run in tf32 and bf16, and the PyTorch reference on
#     the same token ids, eager, in each precision
#   part 3, about 4 min: the reference compiled in bf16; refusals on one GPU (two NCCL ranks on
#     it, exit 2; two ranks summing through host memory instead, --allreduce mpi, runs) or two
#     NCCL ranks on two GPUs; out of GPU memory (exit 2, one line); bf16 against fp32 on the GPU
#     (PRECISION_TEST); gpt2's AdamW update, fused against nine libtorch ops (TRAIN_STEP_BENCH)
# Part 2 and 3 use part 1's fp32 run directory when it is there (the export reads it), else
# make their own. Without a GPU every check fails at once with dp-bench's or torch's refusal.
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR PART (see the comment at its top)}
part=${2:?usage: gpu_checks.sh OUT_DIR PART, PART one of 1, 2, 3, all}
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
# GPUs as torch counts them (nvidia-smi -L also lists MIG slices); 0 where torch sees none.
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c 'import torch; print(torch.__version__, torch.cuda.nccl.version() if torch.cuda.is_available() else "no CUDA")' 2>&1
  echo "GPUs torch sees: $gpus"; } > "$out/gpu.txt"
work="--device cuda --preset gpt2 --batch-size 64 --train-examples 1280 --n-epochs 3 --benchmark-only --overwrite"
one_rank() { check "dp-bench-$1" 0 "the data plane, NCCL on the GPUs, is joined alone" dp-bench $work --precision "$1" --workdir "$out/runs/dp-bench-$1"; }

part1() {
  one_rank fp32
  [ -n "${DATA_PARALLEL_BENCH:-}" ] || return 0
  local bench_env=(env DP_BENCH_ROOT="$(dirname "$here")" DP_BENCH_BIN="$(command -v dp-bench)" DP_BENCH_PYTHON=python3)
  for p in fp32 bf16; do
    touch "$out/bench-$p.started"
    check "bench-$p" 0 "vs pytorch-eager" "${bench_env[@]}" "$DATA_PARALLEL_BENCH" --bench --device cuda \
      --precision "$p" --time-budget "${BENCH_BUDGET:-1m}"
    for f in summary.json table.md; do # what this run wrote, not an earlier run's
      local f_in
      f_in="$(dirname "$here")/target/criterion/data_parallel/$f"
      [ "$f_in" -nt "$out/bench-$p.started" ] && cp "$f_in" "$out/bench-$p-$f"
    done
  done
}

reference() { # reference NAME PRECISION [--compile]
  local name=$1 p=$2; shift 2
  check "$name" 0 "" python3 "$here/torch_reference.py" --examples "$out/examples.json" \
    --template "$out/runs/dp-bench-fp32/run.json" --device cuda --precision "$p" --batch-size 64 \
    --n-epochs 3 --workdir "$out/runs/$name" "$@"
}

exported() { # the token ids the references train on, from part 1's fp32 run (made if absent)
  [ -f "$out/runs/dp-bench-fp32/run.json" ] || one_rank fp32
  [ -f "$out/examples.json" ] || check export 0 "" dp-bench export-examples --workdir "$out/runs/dp-bench-fp32" --out "$out/examples.json"
}

part2() {
  one_rank tf32
  one_rank bf16
  exported
  for p in fp32 tf32 bf16; do reference "pytorch-eager-$p" "$p"; done
}

part3() {
  exported
  reference pytorch-compiled-bf16 bf16 --compile
  local small="--device cuda --preset tiny --batch-size 32 --train-examples 256 --n-epochs 2 --benchmark-only --overwrite"
  if [ "$gpus" -le 1 ]; then
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
}

case "$part" in
  1) part1 ;;
  2) part2 ;;
  3) part3 ;;
  all) part1; part2; part3 ;;
  *) echo "gpu_checks.sh: PART must be 1, 2, 3 or all, not $part" >&2; exit 2 ;;
esac
for r in "$out"/runs/*/; do
  [ -f "$r/run.json" ] && [ ! -d "$r/report" ] && dp-bench compare "$r" --warmup 1 --out "$r/report" > "$r/compare.txt" 2>&1
done
exit $failed
