"""``nnUNetv2_predict_medals``: nnU-Net's ``nnUNetv2_predict`` (all its flags) plus ``-prompts FILE``.

Like our planning entry point, this runs nnU-Net's own command-line code (same parser, same model-folder lookup,
same ``-num_parts/-part_id`` split) and only swaps in the prompted predictor.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import nnunetv2.inference.predict_from_raw_data as stock
import torch

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.inference.folders import coarse_model_folder, predict_prompted_files
from nnunetv2_medals.inference.predictor import MedalSPredictor, load_model
from nnunetv2_medals.inference.two_stage import TwoStagePredictor
from nnunetv2_medals.text_prompts.prompt_file import load_prompt_file

EXTRA_HELP = """nnUNetv2_predict_medals: nnUNetv2_predict with text/mask prompts. Extra flags:
  -prompts FILE               prompt JSON (required; see nnunetv2_medals/text_prompts/prompt_schema.json)
  --sequential                one prompt per network forward (for speed comparisons)
  --refine T                  Algorithm 2 self-refinement rounds for text-only prompts (default 0)
  --max_prompts_per_forward K split prompts into chunks of K per tile (the backbone still runs once)
  --encoder DIR               folder of the model's text encoder if the recorded one moved
  --raw_text                  give every prompt its own text embedding (default: a prompt that canonicalises to
                              a trained target, e.g. "the left-sided kidney" -> "left kidney", gets that target's)
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
             "--roi_scale": float, "--raw_text": None}
    values = {"prompts": None, "sequential": False, "refine": 0, "max_prompts_per_forward": None, "encoder": None,
              "overlay": False, "dynamic_spacing": None, "two_stage": None, "roi_scale": 1.25,
              "raw_text": False}
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


def predict_entry(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = _our_args(argv)
    if "-h" in rest or "--help" in rest:
        print(EXTRA_HELP)
    elif ours.prompts is None:
        sys.exit("error: -prompts FILE is required (use nnUNetv2_predict to segment every trained class)")
    try:
        prompt_file = load_prompt_file(ours.prompts) if ours.prompts else None
    except MedalSInputError as e:
        sys.exit(f"error: {e}")

    class PromptedPredictor(MedalSPredictor):
        """Takes nnUNetPredictor's constructor arguments, as nnU-Net's entry point passes them."""

        def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, use_mirroring: bool = True,
                     perform_everything_on_device: bool = True, device: torch.device = torch.device("cuda"),
                     verbose: bool = False, verbose_preprocessing: bool = False, allow_tqdm: bool = True):
            super().__init__(tile_step_size, use_gaussian, perform_everything_on_device, device, verbose, allow_tqdm,
                             refinement_rounds=ours.refine, sequential=ours.sequential,
                             max_prompts_per_forward=ours.max_prompts_per_forward, encoder=ours.encoder,
                             dynamic_alpha=ours.dynamic_spacing, raw_text=ours.raw_text)

        def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                               save_probabilities: bool = False, overwrite: bool = True,
                               num_processes_preprocessing: int = 1, num_processes_segmentation_export: int = 1,
                               folder_with_segs_from_prev_stage: str = None, num_parts: int = 1, part_id: int = 0):
            predictor = self
            if ours.two_stage:
                coarse = load_model(coarse_model_folder(self.model_folder, ours.two_stage), self.use_folds,
                                    self.checkpoint_name, device=self.device, encoder=ours.encoder,
                                    dynamic_alpha=ours.dynamic_spacing, raw_text=ours.raw_text)
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
    try:
        stock.predict_entry_point()
    except MedalSInputError as e:
        sys.exit(f"error: {e}")
