# Sourced by .ci/demo, .ci/test and the other .ci jobs: create or reuse .venv and install the project (offline-safe at run time).
# torch goes in first, pinned, and every later install uses constraints.txt so nnU-Net's dependency chain keeps
# the CPU build (DESIGN §1). Reinstalls only when setup.py or constraints.txt changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDALS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.nnunetv2_medals_install"
WANT="$(cat "$ROOT/setup.py" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[env] installing nnunetv2-medals into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" "torch==2.13.0" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT[test]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import nnunetv2_medals, nnunetv2, transformers, torch" \
    || { echo "[env] install failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
export nnUNet_extTrainer="$(nnunetv2_medals trainer-dir)"
# Augmentation workers for the jobs' CPU training (nnUNet_n_proc_DA of their training commands only): on 2 cores
# worker processes compete with torch's 2 threads (docs/decisions.md, "The CPU training step")
MEDALS_DA_WORKERS="${MEDALS_DA_WORKERS:-$([ "$(nproc)" -le 2 ] && echo 0 || echo 2)}"
export MEDALS_DA_WORKERS
