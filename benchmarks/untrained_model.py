"""An untrained MedalS model folder of any plans, for time and memory benchmarks (no data, no training).

    python benchmarks/untrained_model.py --plans PLANS.json --like TRAINED_MODEL_DIR -o MODEL_DIR
    python benchmarks/untrained_model.py --like TRAINED_MODEL_DIR --save_like like.pt   # the small part of --like

The folder is what ``nnUNetv2_train … -tr MedalSTrainer`` leaves (``plans.json``, ``dataset.json``,
``fold_0/checkpoint_final.pth``), with the network that ``PLANS`` describes at its initial weights and the
targets, phrasings and stored phrasing embeddings of a trained model (``--like``), so that prompts resolve as they do
for that model and nothing needs the text encoder. Speed and memory of prediction do not depend on the weights'
values; its segmentations are meaningless. ``--save_like`` writes the part of ``--like`` that is needed (dataset.json
and the vocabulary, a few hundred kB) to one file, so the model can be made on a machine without the trained one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_medals.io_utils import atomic_write_bytes
from nnunetv2_medals.network.medals_network import vocabulary_state
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary


def load_like(like: Path) -> dict:
    """``{"dataset_json": …, "vocabulary": …}`` of a trained model folder or of a ``--save_like`` file."""
    if like.is_file():
        return torch.load(like, map_location="cpu", weights_only=False)
    checkpoint = torch.load(like / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    return {"dataset_json": json.loads((like / "dataset.json").read_text()),
            "vocabulary": vocabulary_state(checkpoint["network_weights"])}


def make_model_folder(plans_file: Path, like: dict, out: Path, configuration: str = "3d_fullres") -> Path:
    """Write ``out`` as a one-fold model folder of ``plans_file``'s network (initial weights) and ``like``'s
    vocabulary; returns the checkpoint's path."""
    plans = json.loads(plans_file.read_text())
    dataset_json = like["dataset_json"]
    plans_manager = PlansManager(plans)
    config = plans_manager.get_configuration(configuration)
    # MedalSTrainer builds its network with nnU-Net's own build_network_architecture (the plans name the class)
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, config, determine_num_input_channels(plans_manager, config, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    # what MedalSTrainer.initialize attaches to the network
    vocabulary = ModelVocabulary.from_state(like["vocabulary"])
    network.set_class_embeddings(torch.from_numpy(vocabulary.class_embeddings))
    network.set_text_normalization(torch.from_numpy(vocabulary.phrasing_embeddings))
    network.vocabulary = like["vocabulary"]
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    checkpoint = out / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": "MedalSTrainer",
                "init_args": {"plans": plans, "configuration": configuration, "fold": 0,
                              "dataset_json": dataset_json},
                "inference_allowed_mirroring_axes": None, "current_epoch": 0}, checkpoint)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=Path, help="plans JSON of the network to build")
    parser.add_argument("--like", type=Path, required=True, help="trained MedalS model folder or --save_like file")
    parser.add_argument("-o", type=Path, help="model folder to write")
    parser.add_argument("-c", default="3d_fullres", help="configuration of the plans")
    parser.add_argument("--save_like", type=Path, help="write the needed part of --like to this file and stop")
    args = parser.parse_args()
    like = load_like(args.like)
    if args.save_like:
        import io
        buffer = io.BytesIO()
        torch.save(like, buffer)
        atomic_write_bytes(args.save_like, buffer.getvalue())
        print(f"wrote {args.save_like} ({args.save_like.stat().st_size / 1e3:.0f} kB)")
        return
    if args.plans is None or args.o is None:
        parser.error("--plans and -o are needed to make a model folder")
    checkpoint = make_model_folder(args.plans, like, args.o, args.c)
    # parameters, not state-dict entries: nnU-Net's decoder holds the encoder too, so the state dict lists it twice
    weights = torch.load(checkpoint, weights_only=False)["network_weights"]
    n = sum(v.numel() for v in {v.data_ptr(): v for v in weights.values() if torch.is_tensor(v)}.values())
    print(f"untrained model folder {args.o} ({n / 1e6:.1f} M parameters, {len(like['vocabulary']['targets'])} "
          f"targets)")


if __name__ == "__main__":
    main()
