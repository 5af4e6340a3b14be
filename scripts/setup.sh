#!/usr/bin/env bash
# One-command set-up for dp-bench on a fresh Debian machine with the Rust toolchain.
#
# Installs, only where missing:
#   - MPICH (mpich, libmpich-dev) and libclang-dev (bindgen for the `mpi` crate) through apt, and
#     Chromium for the headless check of the HTML report;
#   - a Python virtual environment in .venv with torch==2.11.0 (the libtorch that `tch` 0.24 links
#     against; .cargo/config.toml and build.rs point the build at it) and sacrebleu.
# Idempotent: a second run checks and returns in seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

TORCH_VERSION="2.11.0"
VENV="$root/.venv"

say() { printf '[setup] %s\n' "$*"; }

# --- system packages --------------------------------------------------------
# chromium: the test that renders the HTML report headless.
apt_packages=(mpich libmpich-dev libclang-dev pkg-config chromium)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "system packages present"
fi

# --- Python venv with libtorch ---------------------------------------------
python="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$python" -m venv "$VENV"
fi
have_torch="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have_torch" != "$TORCH_VERSION" ]; then
    say "installing torch==$TORCH_VERSION into .venv (about 1 minute)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
else
    say "torch $TORCH_VERSION present"
fi
if ! "$VENV/bin/python" -c 'import sacrebleu' 2>/dev/null; then
    say "installing sacrebleu into .venv"
    "$VENV/bin/python" -m pip install -q "sacrebleu==2.5.1"
fi

# --- tell the build where libtorch is ---------------------------------------
torch_dir="$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || { echo "setup: $torch_dir has no lib/libtorch_cpu.so" >&2; exit 1; }
# A stable path for .cargo/config.toml (LIBTORCH) and build.rs (rpath), whatever the Python version.
ln -sfn "$torch_dir" "$VENV/libtorch"
say "libtorch at $torch_dir (linked as .venv/libtorch)"
say "done: cargo build --release && mpirun -n 2 target/release/dp-bench"
