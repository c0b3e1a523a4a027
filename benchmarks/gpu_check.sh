#!/usr/bin/env bash
# The GPU half of the benchmarks in one call (about 5 minutes on an H100), never part of the tests.
#
#   bash benchmarks/gpu_check.sh prepare      # here, on CPU, after `bash .ci/demo`: fills .gpu_bench/
#   bash benchmarks/gpu_check.sh              # on the GPU machine (the working tree + .gpu_bench/ copied there)
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # dry run of the same steps on CPU at tiny sizes
#
# `prepare` writes into .gpu_bench/: the real-size preset's plans (MedalSPlanner, ResEnc-M + d = 768 query decoder)
# planned for the demo's phantom CT at the paper's coarse spacing (3.0 x 1.5 x 1.5 mm, z y x), the demo model's
# vocabulary (benchmarks/untrained_model.py --save_like: prompts resolve without the text encoder), the committed
# project (project.tar.gz, `git archive HEAD`: what is measured is a commit), and, for a GPU machine that cannot
# install from an index, the files of the dependencies a bare PyTorch image lacks (site.tar.xz). There:
#   mkdir -p /tmp/p && tar -xzf .gpu_bench/project.tar.gz -C /tmp/p && cp -r .gpu_bench /tmp/p/ && bash /tmp/p/benchmarks/gpu_check.sh
# The check then builds an untrained model of those plans (weights do not change time or memory) and runs:
#   1. train_step.py --real: MedalSTrainer's step vs nnUNetTrainer's on the same backbone and patch (autocast as
#      nnU-Net trains: float16 on CUDA)
#   2. network_forward.py --real: one forward at N = 1, 8, 24 prompts
#   3. large_volume.py: the 512 x 512 x 300 phantom CT with 24 prompts, end to end, peak GPU memory
#   4. predict_prompts.py: the same CT's sliding window, parallel vs sequential prompting at N = 1, 8, 24
#   5. train_step.py --real --compile: torch.compile on (if time is left)
# Each step has its own time limit, logs to the output folder, and a failing step does not stop the others.
# GPU_CHECK_MODEL=.gpu_bench/demo_model: steps 3-4 with the trained demo model (CPU preset) instead; GPU_CHECK_STEPS
# picks steps; GPU_CHECK_COMPILE_LIMIT (s) bounds step 5.
# Output: $GPU_CHECK_OUT (default benchmarks/results/gpu, on the device machine $OUT): the steps' JSON + gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BENCH="$ROOT/.gpu_bench"

if [ "${1:-}" = "prepare" ]; then
  set -e
  source .ci/env.sh
  DEMO="$ROOT/work_dirs/demo"
  MODEL="$DEMO/nnUNet_results/Dataset501_MedalSPhantom/MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"
  [ -d "$MODEL" ] || { echo "no demo model: run bash .ci/demo first" >&2; exit 1; }
  mkdir -p "$BENCH"
  grep -qx "/.gpu_bench/" .git/info/exclude 2>/dev/null || echo "/.gpu_bench/" >> .git/info/exclude
  TMP="$(mktemp -d)"
  mkdir -p "$TMP/Dataset501_MedalSPhantom"
  cp "$DEMO/nnUNet_preprocessed/Dataset501_MedalSPhantom/"{dataset.json,dataset_fingerprint.json} \
    "$TMP/Dataset501_MedalSPhantom/"
  nnUNet_raw="$DEMO/nnUNet_raw" nnUNet_preprocessed="$TMP" nnUNet_medals_cache="$DEMO/cache" \
    nnUNetv2_plan_and_preprocess_medals -d 501 -pl MedalSPlanner --no_pp -c 3d_fullres \
    -overwrite_target_spacing 3.0 1.5 1.5 -overwrite_plans_name MedalSPlansGPUBench > "$TMP/plan.log"
  cp "$TMP/Dataset501_MedalSPhantom/MedalSPlansGPUBench.json" "$BENCH/plans_real.json"
  cp "$MODEL/plans.json" "$BENCH/plans_cpu.json"
  python benchmarks/untrained_model.py --like "$MODEL" --save_like "$BENCH/like.pt"
  # the demo model itself, without its optimizer state (for GPU_CHECK_MODEL=.gpu_bench/demo_model)
  rm -rf "$BENCH/demo_model" && mkdir -p "$BENCH/demo_model/fold_0" && cp "$MODEL"/*.json "$BENCH/demo_model/"
  python -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
c['optimizer_state'] = None; torch.save(c, sys.argv[2])" "$MODEL/fold_0/checkpoint_final.pth" \
    "$BENCH/demo_model/fold_0/checkpoint_final.pth"
  # the dependencies a bare PyTorch image lacks (pure-Python ones as wheels, compiled ones for
  # CPython 3.12 manylinux x86-64), unpacked into one folder and packed with xz to fit a 64 MiB transfer
  rm -rf "$TMP/whl" "$TMP/site" && mkdir -p "$TMP/whl" "$TMP/site"
  git archive --format=tar.gz -o "$BENCH/project.tar.gz" HEAD
  python -m pip wheel -q --no-deps -w "$TMP/whl" nnunetv2==2.8.1 dynamic_network_architectures==0.4.4 \
    batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 acvl_utils==0.2.6 nibabel==5.4.2 yacs==0.1.8 graphviz==0.21
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$TMP/whl" simpleitk==2.5.3 \
    blosc2==4.14.1 connected-components-3d==4.1.1 numexpr==2.14.2 ndindex==1.10.1 jsonschema==4.26.0 \
    jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  for w in "$TMP"/whl/*.whl; do python -m zipfile -e "$w" "$TMP/site"; done
  tar -C "$TMP/site" -cf - . | xz -T2 -6 > "$BENCH/site.tar.xz"
  rm -rf "$TMP"
  du -sh "$BENCH"/*
  exit 0
fi

OUTDIR="${GPU_CHECK_OUT:-${OUT:-$ROOT/benchmarks/results/gpu}}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
START=$SECONDS
if ! (cd / && python3 -c "import nnunetv2, nnunetv2_medals.text_prompts") 2>/dev/null; then
  # not installed: the dependencies from site.tar.xz, the package assembled from this tree as setup.py lays it out
  [ -f "$BENCH/site.tar.xz" ] && mkdir -p /tmp/medals_site && tar -C /tmp/medals_site -xJf "$BENCH/site.tar.xz"
  for w in "$BENCH"/whl/*.whl; do [ -f "$w" ] && python3 -m zipfile -e "$w" /tmp/medals_site; done
  PKG=/tmp/medals_pkg
  rm -rf "$PKG" && mkdir -p "$PKG" && cp -r nnunetv2_medals "$PKG/"
  for sub in trainers planners text_prompts; do rm -rf "$PKG/nnunetv2_medals/$sub"; cp -r "$sub" "$PKG/nnunetv2_medals/$sub"; done
  export PYTHONPATH="$PKG:/tmp/medals_site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${nnUNet_extTrainer:-}" ]; then
  nnUNet_extTrainer="$(cd / && python3 -c 'from nnunetv2_medals.paths import trainer_dir; print(trainer_dir())')"
  export nnUNet_extTrainer
fi
WORK="$(mktemp -d)"
export nnUNet_raw="$WORK/raw" nnUNet_preprocessed="$WORK/pre" nnUNet_results="$WORK/res"
export nnUNet_medals_cache="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== $(date -u +%FT%TZ) gpu_check on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, nnunetv2_medals; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" || exit 1

if [ -n "${GPU_CHECK_TINY:-}" ]; then
  DEVICE=cpu PLANS="$BENCH/plans_cpu.json" REAL="" SHAPE="48 96 128" NS="1 8"
else
  DEVICE=cuda PLANS="$BENCH/plans_real.json" REAL="--real" SHAPE="300 512 512" NS="1 8 24"
fi
MODEL="$WORK/model"
python3 benchmarks/untrained_model.py --plans "$PLANS" --like "$BENCH/like.pt" -o "$MODEL" || exit 1
# GPU_CHECK_MODEL=DIR: steps 3-4 predict with this trained model folder instead of the untrained real-size one (the
# export's cost depends on what the network outputs; untrained noise covers every prompt's whole image)
if [ -n "${GPU_CHECK_MODEL:-}" ]; then
  [ -d "$GPU_CHECK_MODEL/fold_0" ] || { echo "GPU_CHECK_MODEL=$GPU_CHECK_MODEL is not a model folder" >&2; exit 1; }
  MODEL="$(cd "$GPU_CHECK_MODEL" && pwd)" && echo "steps 3-4 predict with $MODEL"
fi

STEPS="${GPU_CHECK_STEPS:-train_step network_forward large_volume predict_prompts train_step_compiled}"
step() {  # step NAME LIMIT_S CMD…: run one benchmark with a time limit; report, never abort the whole check
  local name="$1" limit="$2"; shift 2
  case " $STEPS " in *" $name "*) ;; *) echo "== $name: skipped (GPU_CHECK_STEPS)"; return;; esac
  echo "== $name (limit ${limit}s, $((SECONDS - START))s so far)"
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - t0))s"
}
cd benchmarks
step train_step 150 python3 train_step.py $REAL --quick --profile --device "$DEVICE" --out "$OUTDIR/train_step.json"
step network_forward 90 python3 network_forward.py $REAL --quick --device "$DEVICE" --ns $NS \
  --out "$OUTDIR/network_forward.json"
step large_volume 240 python3 large_volume.py -m "$MODEL" --device "$DEVICE" --shape $SHAPE --prompts $NS \
  --out "$OUTDIR/large_volume.json"
if [[ " $STEPS " == *" predict_prompts "* ]]; then
python3 - "$WORK/large_0000.nii.gz" $SHAPE <<'EOF'
import sys
import numpy as np
from nnunetv2_medals.datasets.phantom import _FOV_MM, make_phantom_case
from nnunetv2_medals.io_utils import write_nifti
shape = [int(v) for v in sys.argv[2:5]]
case = make_phantom_case(np.random.default_rng(0), tuple(float(f / n) for f, n in zip(_FOV_MM, shape)))
write_nifti(case.image_hu, case.spacing_mm, sys.argv[1])
EOF
fi
step predict_prompts 180 python3 predict_prompts.py -m "$MODEL" -i "$WORK/large_0000.nii.gz" --device "$DEVICE" \
  --ns $NS --repeats 1 --out "$OUTDIR/predict_prompts.json"
if [ -z "${GPU_CHECK_TINY:-}" ] && [ $((SECONDS - START)) -lt 240 ]; then
  step train_step_compiled "${GPU_CHECK_COMPILE_LIMIT:-150}" python3 train_step.py $REAL --quick --compile --device "$DEVICE" \
    --out "$OUTDIR/train_step_compiled.json"
elif [ -z "${GPU_CHECK_TINY:-}" ] && [[ " $STEPS " == *" train_step_compiled "* ]]; then
  echo "== train_step_compiled: skipped ($((SECONDS - START))s so far; it starts only before 240s)"
fi
echo "== done in $((SECONDS - START))s; results in $OUTDIR"
rm -rf "$WORK"
