"""Prompted prediction of a folder of cases (``nnUNetv2_predict_medals``): the file loop around a predictor."""
from __future__ import annotations

import os
from pathlib import Path

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import plans_reader_writer
from nnunetv2_medals.inference.case_files import read_case
from nnunetv2_medals.inference.export import write_prediction
from nnunetv2_medals.text_prompts.prompt_file import PromptFile


def coarse_model_folder(fine_model_folder: str, coarse_configuration: str) -> str:
    """The folder of another configuration of the same dataset, trainer and plans (``…/T__P__3d_lowres``)."""
    folder = Path(fine_model_folder)
    trainer, plans, _ = folder.name.split("__")
    coarse = folder.with_name(f"{trainer}__{plans}__{coarse_configuration}")
    if not coarse.is_dir():
        raise MedalSInputError(coarse, "--two_stage", f"no trained {coarse_configuration!r} model next to "
                                                      f"{folder.name}; train it with nnUNetv2_train D "
                                                      f"{coarse_configuration} F -tr {trainer} -p {plans}")
    return str(coarse)


def model_checkpoint(model_folder: str, fold: str | None = None, checkpoint: str = "checkpoint_final.pth") -> Path:
    """The checkpoint file of a trained model folder (``…/T__P__C`` with ``fold_N`` inside, or a ``fold_N``)."""
    folder = Path(model_folder)
    if (folder / checkpoint).is_file() and fold is None:
        return folder / checkpoint
    folds = [folder / f"fold_{fold}"] if fold is not None else sorted(folder.glob("fold_*"))
    for f in folds:
        if (f / checkpoint).is_file():
            return f / checkpoint
    raise MedalSInputError(folder, checkpoint, "not found" + (f" in fold_{fold}" if fold is not None else
                                                               " in any fold_N of this model folder"))


def predict_prompted_files(predictor, prompt_file: PromptFile, source_folder: str, output_folder: str,
                           save_probabilities: bool = False, overwrite: bool = True, num_parts: int = 1,
                           part_id: int = 0, overlay: bool = False) -> list[str]:
    """Predict every case of ``source_folder`` (nnU-Net's ``CASE_XXXX.ext`` naming) with its prompts.

    ``predictor`` is a ``MedalSPredictor`` or a ``TwoStagePredictor`` (anything with ``predict_image``,
    ``dataset_json``, ``plans_manager`` and ``accepts_mask_prompts``). Cases are split over ``num_parts`` machines
    as nnU-Net does (``part_id::num_parts``). Returns the written label-map paths.
    """
    ending = predictor.dataset_json["file_ending"]
    every_case = {os.path.basename(files[0])[:-(len(ending) + 5)]
                  for files in create_lists_from_splitted_dataset_folder(source_folder, ending)}
    unknown = sorted(set(prompt_file.cases) - every_case)
    if unknown:
        raise MedalSInputError(prompt_file.source, f"cases.{unknown[0]}",
                               f"no such case in {source_folder} (cases there: {', '.join(sorted(every_case))})")
    if not predictor.accepts_mask_prompts and any(p.mask is not None for ps in
                                                  [prompt_file.prompts, *prompt_file.cases.values()] for p in ps):
        raise MedalSInputError(prompt_file.source, "mask", "two-stage prediction makes its own spatial prompts from "
                                                           "stage 1; drop --two_stage or the mask prompts")
    # nnU-Net's own case list, -part_id/-num_parts split and overwrite rule (it reads only ``dataset_json``)
    lists, outputs, _ = nnUNetPredictor._manage_input_and_output_lists(predictor, source_folder, output_folder, None,
                                                                       overwrite, part_id, num_parts,
                                                                       save_probabilities)
    reader_writer = plans_reader_writer(predictor.plans_manager)
    written = []
    for files, out in zip(lists, outputs):
        case = os.path.basename(out)
        prompts = prompt_file.prompts_for(case)
        image, properties, masks = read_case(predictor, files, prompts)
        result = predictor.predict_image(image, properties, prompts, masks, source=str(files[0]))
        write_prediction(result, out, reader_writer, ending, save_probabilities, overlay)
        found = ", ".join(f"{p['text']}={p['volume_ml']} mL" for p in result.summary["prompts"])
        print(f"{case}: {found}")
        written.append(out + ending)
    return written
