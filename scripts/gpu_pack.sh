#!/usr/bin/env bash
# Packs dp-bench for a GPU machine with the executables scripts/gpu_checks.sh takes: builds the
# release binary and benches and tests/precision.rs's executable, bundles them with
# ../shared/gpu/bundle.sh, and writes OUT_DIR/env.sh naming each (they are on PATH there).
#   scripts/gpu_pack.sh [OUT_DIR]                 (default .gpu, git-ignored)
# then, on the GPU machine, from a copy of this tree with OUT_DIR beside scripts/:
#   source OUT_DIR/env.sh && bash OUT_DIR/on-gpu.sh bash scripts/gpu_checks.sh RESULTS_DIR 1
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu}
# The executables cargo built, by target name, from its JSON messages.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
cargo build --release
built=$( (cargo build --release --benches --message-format=json; cargo test --no-run --test precision --message-format=json) | executables)
pick() { awk -v name="$1" '$1 == name {print $2}' <<<"$built" | tail -n 1; }
data_parallel=$(pick data_parallel) train_step=$(pick train_step) precision=$(pick precision)
for exe in "$data_parallel" "$train_step" "$precision"; do
  [ -x "$exe" ] || { echo "gpu_pack.sh: an executable was not built (${exe:-none})" >&2; exit 1; }
done
BUNDLE_EXTRA="$data_parallel $train_step $precision" ../shared/gpu/bundle.sh "$out"
cat > "$out/env.sh" <<ENV
# The executables packed with dp-bench (on PATH under on-gpu.sh), for scripts/gpu_checks.sh.
export DATA_PARALLEL_BENCH=$(basename "$data_parallel") TRAIN_STEP_BENCH=$(basename "$train_step") PRECISION_TEST=$(basename "$precision")
ENV
echo "gpu_pack.sh: $out ready: source $out/env.sh && bash $out/on-gpu.sh bash scripts/gpu_checks.sh RESULTS_DIR 1"
