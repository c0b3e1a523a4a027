#!/usr/bin/env bash
# Data and models for benchmarks/two_stage.py: a phantom at 2.0 x 1.5 x 1.5 mm (the lymph nodes and the liver tumour
# are the small targets), planned by MedalSPlannerCPU into 3d_fullres (fine) and 3d_lowres (coarse: the whole median
# image in one patch, 7.3 x 5.5 x 5.5 mm), both trained for 2500 iterations with the CPU demo settings
# (MedalSTrainer_CPUDemo_100epochs: about 40 + 24 minutes on 2 cores, validation included).
# Everything goes to work_dirs/two_stage.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/env.sh
W="$PWD/work_dirs/two_stage"
export nnUNet_raw="$W/nnUNet_raw" nnUNet_preprocessed="$W/nnUNet_preprocessed" nnUNet_results="$W/nnUNet_results"
export nnUNet_extTrainer="$(nnunetv2_medals trainer-dir)"
nnunetv2_medals phantom -d 502 -n 10 --num_test 3 --spacing 2.0 1.5 1.5 --overwrite
nnUNetv2_plan_and_preprocess_medals -d 502 -pl MedalSPlannerCPU -c 3d_fullres 3d_lowres -np 1
for config in 3d_fullres 3d_lowres; do
  nnUNet_n_proc_DA=0 nnUNetv2_train 502 "$config" 0 -tr MedalSTrainer_CPUDemo_100epochs -p MedalSPlansCPU -device cpu
done
