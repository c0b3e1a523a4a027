"""Hybrid (text + mask) prompts vs text only: noised mask prompts for a test set, and the side-by-side table.

    python benchmarks/hybrid_prompts.py noise DATASET_DIR PROMPTS_JSON OUT_DIR [--seed 0] [--rotation 5]
        [--shift 3] [--boundary 1]
    python benchmarks/hybrid_prompts.py compare TEXT_EVAL_DIR HYBRID_EVAL_DIR [--label hybrid] [--alone EVAL_DIR]

``noise`` writes ``OUT_DIR/prompts.json``: PROMPTS_JSON with, for every case of ``DATASET_DIR/labelsTs``, each
prompt given a mask prompt made from that case's ground truth the way a rough prior would be: one rigid motion per
case (rotation up to ``--rotation`` degrees about each axis, shift up to ``--shift`` voxels per axis, about the
volume's centre, nearest neighbour), then per prompt a boundary ``--boundary`` voxels out (dilated) or in (eroded),
with equal odds. Written with SciPy, independently of the training-time simulation
(``nnunetv2_medals.training.prompt_perturbation``). ``compare`` reads two ``nnunetv2_medals evaluate`` folders
(same prompts; ``--alone``: a third, the mask prompts themselves scored as the prediction) and prints DSC per prompt
and the mean, and a RESULT line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json


def noised_masks(labels: np.ndarray, values: list[int], rng: np.random.Generator, rotation: float, shift: float,
                 boundary: int) -> dict[int, np.ndarray]:
    """value -> binary mask of ``labels == value`` moved by one random rigid motion and dilated/eroded."""
    matrix = Rotation.from_euler("xyz", rng.uniform(-rotation, rotation, 3), degrees=True).as_matrix()
    centre = (np.asarray(labels.shape) - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-shift, shift, 3)
    moved = ndimage.affine_transform(labels, matrix, offset, order=0, mode="constant")
    out = {}
    for value in values:
        mask = moved == value
        if boundary > 0 and mask.any():
            grown = rng.random() < 0.5
            changed = (ndimage.binary_dilation if grown else ndimage.binary_erosion)(mask, iterations=boundary)
            mask = changed if changed.any() else mask
        out[value] = mask.astype(np.uint8)
    return out


def write_noised_prompts(dataset: Path, prompt_file: Path, out: Path, seed: int, rotation: float, shift: float,
                         boundary: int) -> Path:
    prompts = json.loads(prompt_file.read_text())
    rng = np.random.default_rng(seed)
    out = out.resolve()
    cases = {}
    with atomic_directory(out, overwrite=True) as tmp:
        for label_file in sorted((dataset / "labelsTs").glob("*.nii.gz")):
            case = label_file.name[: -len(".nii.gz")]
            listed = prompts.get("cases", {}).get(case, {}).get("prompts", prompts["prompts"])
            image = sitk.ReadImage(str(label_file))
            masks = noised_masks(sitk.GetArrayFromImage(image), sorted({p["label"] for p in listed}), rng,
                                 rotation, shift, boundary)
            entries = []
            for p in listed:
                name = f"{case}_mask_label{p['label']}.nii.gz"
                mask = sitk.GetImageFromArray(masks[p["label"]])
                mask.CopyInformation(image)
                sitk.WriteImage(mask, str(tmp / name))
                entries.append({**p, "mask": str(out / name)})
            cases[case] = {"prompts": entries}
        atomic_write_json(tmp / "prompts.json", {**{k: v for k, v in prompts.items() if k != "cases"},
                                                 "cases": cases})
    return out / "prompts.json"


def compare(text_eval: Path, hybrid_eval: Path, label: str, alone_eval: Path | None = None) -> None:
    runs = {"text only": text_eval, label: hybrid_eval, **({"mask alone": alone_eval} if alone_eval else {})}
    summaries = {name: json.loads((folder / "summary.json").read_text()) for name, folder in runs.items()}
    print(f"  {'prompt':36s}" + "".join(f" {name:>11s}" for name in runs))
    for prompt, scores in summaries["text only"]["per_class"].items():
        row = [s["per_class"].get(prompt, {}).get("DSC") for s in summaries.values()]
        if None not in row:
            print(f"  {prompt:36s}" + "".join(f" {v:11.3f}" for v in row))
    means = [s["mean"]["DSC"] for s in summaries.values()]
    print(f"  {'mean DSC':36s}" + "".join(f" {v:11.3f}" for v in means))
    t, h = means[:2]
    extra = f", mask alone {means[2]:.3f}" if alone_eval else ""
    print(f"RESULT mean DSC text-only {t:.3f}, {label} {h:.3f} ({100 * (h - t):+.1f} Dice points){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    noise = sub.add_parser("noise")
    noise.add_argument("dataset", type=Path)
    noise.add_argument("prompts", type=Path)
    noise.add_argument("out", type=Path)
    noise.add_argument("--seed", type=int, default=0)
    noise.add_argument("--rotation", type=float, default=5.0)
    noise.add_argument("--shift", type=float, default=3.0)
    noise.add_argument("--boundary", type=int, default=1)
    cmp = sub.add_parser("compare")
    cmp.add_argument("text_eval", type=Path)
    cmp.add_argument("hybrid_eval", type=Path)
    cmp.add_argument("--label", default="hybrid")
    cmp.add_argument("--alone", type=Path, help="an evaluate folder of the mask prompts scored as the prediction")
    args = parser.parse_args()
    if args.command == "noise":
        print(write_noised_prompts(args.dataset, args.prompts, args.out, args.seed, args.rotation, args.shift,
                                   args.boundary))
    else:
        compare(args.text_eval, args.hybrid_eval, args.label, args.alone)


if __name__ == "__main__":
    main()
