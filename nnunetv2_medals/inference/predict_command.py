"""``nnUNetv2_predict_medals``: nnU-Net's ``nnUNetv2_predict`` (all its flags) plus ``-prompts FILE``.

Like our planning entry point, this runs nnU-Net's own command-line code (same parser, same model-folder lookup,
same ``-num_parts/-part_id`` split) and only swaps in the prompted predictor.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import nnunetv2.inference.predict_from_raw_data as stock
import torch

from nnunetv2_medals.errors import MedalSInputError, one_line_errors
from nnunetv2_medals.inference.folders import coarse_model_folder, model_checkpoint, predict_prompted_files
from nnunetv2_medals.io_utils import refuse_output_inside_input
from nnunetv2_medals.inference.predictor import MedalSPredictor, load_model
from nnunetv2_medals.inference.two_stage import TwoStagePredictor
from nnunetv2_medals.text_prompts.prompt_file import load_prompt_file

EXTRA_HELP = """nnUNetv2_predict_medals: nnUNetv2_predict with text/mask prompts. Extra flags:
  -prompts FILE               prompt JSON (required; see nnunetv2_medals/text_prompts/prompt_schema.json)
  --sequential                one prompt per network forward (for speed comparisons)
  --refine T                  Algorithm 2 self-refinement rounds after the first pass (default 0; with
                              --two_stage, of stage 2)
  --max_prompts_per_forward K split prompts into chunks of K per tile (the backbone still runs once)
  --encoder DIR               folder of the model's text encoder if the recorded one moved
  --raw_text                  give every prompt its own text embedding (default: a prompt that canonicalises to
                              a trained target, e.g. "the left-sided kidney" -> "left kidney", gets that target's)
  --no_side_guard             do not cut prompts that name a side at the body's midline (default: cut, see
                              nnunetv2_medals/laterality.py)
  --overlay                   also write CASE_overlay.png (three orthogonal slices through each found structure)
  --dynamic_spacing ALPHA     dynamic resampling (paper §2.5): resample each case for its smallest prompted
                              structure so that it fills ALPHA of the patch (e.g. 0.5)
  --two_stage CONFIG          two-stage prediction (paper §2.6): CONFIG (e.g. 3d_lowres, same -d/-tr/-p/-f) runs
                              first on the whole image, -c's model then on the ROI with stage 1 as spatial prompts
  --roi_scale S               two-stage ROI = stage-1 foreground box x S (1.1-1.5, default 1.25)
nnU-Net's flags follow.
"""


def _our_args(argv: Sequence[str]):
    """Take our flags out of ``argv`` by exact name (argparse would also read nnU-Net's ``-p`` as ``-prompts``)."""
    flags = {"-prompts": str, "--sequential": None, "--refine": int, "--max_prompts_per_forward": int,
             "--encoder": str, "--overlay": None, "--dynamic_spacing": float, "--two_stage": str,
             "--roi_scale": float, "--raw_text": None, "--no_side_guard": None}
    values = {"prompts": None, "sequential": False, "refine": 0, "max_prompts_per_forward": None, "encoder": None,
              "overlay": False, "dynamic_spacing": None, "two_stage": None, "roi_scale": 1.25,
              "raw_text": False, "no_side_guard": False}
    rest, i = [], 0
    while i < len(argv):
        flag = argv[i]
        if flag in flags:
            key = flag.lstrip("-")
            if flags[flag] is None:
                values[key] = True
            else:
                if i + 1 >= len(argv):
                    sys.exit(f"error: {flag} needs a value")
                try:
                    values[key] = flags[flag](argv[i + 1])
                except ValueError:
                    sys.exit(f"error: {flag} expects {flags[flag].__name__}, got {argv[i + 1]!r}")
                i += 1
        else:
            rest.append(flag)
        i += 1
    return argparse.Namespace(**values), rest


def _check_our_args(ours: argparse.Namespace) -> None:
    """Values our flags may take, checked before the model loads."""
    if ours.refine < 0:
        raise MedalSInputError("command line", "--refine", f"needs 0 or more rounds, got {ours.refine}")
    if ours.max_prompts_per_forward is not None and ours.max_prompts_per_forward < 1:
        raise MedalSInputError("command line", "--max_prompts_per_forward",
                               f"needs at least 1 prompt per forward, got {ours.max_prompts_per_forward}")
    if ours.dynamic_spacing is not None and not ours.dynamic_spacing > 0:
        raise MedalSInputError("command line", "--dynamic_spacing", f"ALPHA is the fraction of the patch the smallest "
                                                                    f"structure fills: above 0 (e.g. 0.5), got "
                                                                    f"{ours.dynamic_spacing}")
    if not ours.roi_scale > 0:
        raise MedalSInputError("command line", "--roi_scale", f"needs a positive factor (1.1-1.5), got {ours.roi_scale}")


def _check_nnunet_args(rest: Sequence[str]) -> None:
    """The ordinary mistakes nnU-Net's command would answer with a traceback, checked before the model loads:
    missing -i folder, -o equal to or inside -i, unknown -d, no trained model or fold, -device cuda without CUDA."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("-i", "-o", "-d", "-c"):
        probe.add_argument(flag)
    probe.add_argument("-p", default="nnUNetPlans")
    probe.add_argument("-tr", default="nnUNetTrainer")
    probe.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"])
    probe.add_argument("-chk", default="checkpoint_final.pth")
    probe.add_argument("-device", default="cuda")
    args, _ = probe.parse_known_args(list(rest))
    if None in (args.i, args.o, args.d, args.c):
        return  # nnU-Net's parser names what is missing
    if not Path(args.i).is_dir():
        raise MedalSInputError(args.i, "-i", "is not a folder; give the folder of CASE_0000 images")
    refuse_output_inside_input(args.o, {"-i": args.i})
    try:
        dataset = maybe_convert_to_dataset_name(args.d)
    except RuntimeError:
        raise MedalSInputError("command line", "-d", f"no dataset {args.d!r} in nnUNet_raw, nnUNet_preprocessed or "
                                                     f"nnUNet_results") from None
    model = Path(get_output_folder(dataset, args.tr, args.p, args.c))
    if not model.is_dir():
        raise MedalSInputError(model, "-tr/-p/-c", "no trained model here; train it with nnUNetv2_train "
                                                   f"{args.d} {args.c} FOLD -tr {args.tr} -p {args.p}")
    for fold in args.f:
        model_checkpoint(str(model), str(fold), args.chk)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MedalSInputError("command line", "-device", "cuda was asked for but this machine has no CUDA device "
                                                          "(or this torch has no CUDA); use -device cpu")


def predict_entry(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = _our_args(argv)
    if "-h" in rest or "--help" in rest:
        print(EXTRA_HELP)
    elif ours.prompts is None:
        sys.exit("error: -prompts FILE is required (use nnUNetv2_predict to segment every trained class)")
    with one_line_errors():
        _check_our_args(ours)
        prompt_file = load_prompt_file(ours.prompts) if ours.prompts else None
        if not ("-h" in rest or "--help" in rest):
            _check_nnunet_args(rest)

    class PromptedPredictor(MedalSPredictor):
        """Takes nnUNetPredictor's constructor arguments, as nnU-Net's entry point passes them."""

        def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, use_mirroring: bool = True,
                     perform_everything_on_device: bool = True, device: torch.device = torch.device("cuda"),
                     verbose: bool = False, verbose_preprocessing: bool = False, allow_tqdm: bool = True):
            super().__init__(tile_step_size, use_gaussian, perform_everything_on_device, device, verbose, allow_tqdm,
                             refinement_rounds=ours.refine, sequential=ours.sequential,
                             max_prompts_per_forward=ours.max_prompts_per_forward, encoder=ours.encoder,
                             dynamic_alpha=ours.dynamic_spacing, raw_text=ours.raw_text,
                             side_guard=not ours.no_side_guard)

        def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                               save_probabilities: bool = False, overwrite: bool = True,
                               num_processes_preprocessing: int = 1, num_processes_segmentation_export: int = 1,
                               folder_with_segs_from_prev_stage: str = None, num_parts: int = 1, part_id: int = 0):
            predictor = self
            if ours.two_stage:
                coarse = load_model(coarse_model_folder(self.model_folder, ours.two_stage), self.use_folds,
                                    self.checkpoint_name, device=self.device, encoder=ours.encoder,
                                    dynamic_alpha=ours.dynamic_spacing, raw_text=ours.raw_text,
                                    side_guard=not ours.no_side_guard)
                predictor = TwoStagePredictor(coarse, self, ours.roi_scale)
            return predict_prompted_files(predictor, prompt_file, list_of_lists_or_source_folder,
                                          output_folder_or_list_of_truncated_output_files, save_probabilities,
                                          overwrite, num_parts, part_id, ours.overlay)

        def predict_from_files_sequential(self, list_of_lists_or_source_folder,
                                          output_folder_or_list_of_truncated_output_files,
                                          save_probabilities: bool = False, overwrite: bool = True,
                                          folder_with_segs_from_prev_stage: str = None):
            return self.predict_from_files(list_of_lists_or_source_folder,
                                           output_folder_or_list_of_truncated_output_files, save_probabilities,
                                           overwrite)

    stock.nnUNetPredictor = PromptedPredictor
    sys.argv = [sys.argv[0], *rest]
    with one_line_errors():
        stock.predict_entry_point()
