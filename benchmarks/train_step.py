"""Time per training step: MedalSTrainer's step vs nnUNetTrainer's on the same backbone and patch.

    python benchmarks/train_step.py            # CPU preset backbone, 2 × 32×48×48 (the phantom's CPU plans)
    python benchmarks/train_step.py --quick    # fewer repeats, under a minute
    python benchmarks/train_step.py --real     # real-size preset (ResEnc-M + reference query decoder), 128³

Both sides run forward + backward + AdamW/SGD step on the same random batch (data loading and augmentation are
nnU-Net's in both trainers and are left out). The Medal S side does everything its train_step does per batch:
sampling ``max_queries`` prompts per sample, building per-query targets at every deep-supervision scale,
Algorithm 1, the fused forward and the per-query BCE + Dice. Runs are interleaved; medians are reported. Prints a
table, ``RESULT key=value …``, and writes ``benchmarks/results/train_step.json``.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from bench_utils import report, timed
from network_forward import preset_kwargs
from nnunetv2_medals.datasets.phantom import phantom_dataset_json
from nnunetv2_medals.datasets.text_prompted import parse_text_prompted_dataset
from nnunetv2_medals.losses import PromptBCEDiceLoss, nnunet_deep_supervision_weights
from nnunetv2_medals.network.medals_network import MedalSNetwork
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary, VocabularyTarget
from nnunetv2_medals.training.prompt_sampling import TargetLookup, sample_query_batch
from nnunetv2_medals.training.spatial_prompts import simulate_spatial_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_queries", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks (as nnU-Net does on "
                                                                "CUDA with nnUNet_compile); compile time is left out")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()
    device = args.device

    kwargs, tile = preset_kwargs(args.real)
    if not args.real:
        tile = (32, 48, 48)
    backbone = {k: v for k, v in kwargs.items() if not k.startswith(("query_", "text_"))}
    dataset = parse_text_prompted_dataset(phantom_dataset_json(1), "phantom/dataset.json")
    n_targets = len(dataset.targets)
    n_ds = len(kwargs["strides"]) - 1

    medals = MedalSNetwork(input_channels=1, num_classes=n_targets, deep_supervision=True, **kwargs).to(device)
    plain = ResidualEncoderUNet(input_channels=1, num_classes=7, deep_supervision=True, **backbone).to(device)
    if args.compile:
        medals, plain = torch.compile(medals), torch.compile(plain)
    medals_opt = torch.optim.AdamW(medals.parameters(), 1e-4, weight_decay=0.01)
    plain_opt = torch.optim.SGD(plain.parameters(), 1e-2, momentum=0.99, nesterov=True)
    weights = nnunet_deep_supervision_weights(n_ds, ddp=False)
    medals_loss = DeepSupervisionWrapper(PromptBCEDiceLoss(), weights)
    plain_loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False},
                                                       {}, dice_class=MemoryEfficientSoftDiceLoss), weights)

    rng = np.random.default_rng(0)
    phrasings = dataset.all_phrasings()
    vocab = ModelVocabulary(tuple(VocabularyTarget(t.name, t.label_values, t.instance, t.is_region, t.prompts)
                                  for t in dataset.targets),
                            phrasings, rng.standard_normal((len(phrasings), 384)).astype(np.float32), {})
    embeddings = torch.from_numpy(vocab.phrasing_embeddings).to(device)
    lookup = TargetLookup(dataset.targets)
    x = torch.randn(2, 1, *tile, device=device)
    seg_full = torch.from_numpy(rng.integers(0, 7, (2, 1, *tile))).float().to(device)
    segs = [seg_full]
    for _ in range(n_ds - 1):
        segs.append(segs[-1][:, :, ::2, ::2, ::2])

    def medals_step():
        presence = lookup.presence(segs[0]).cpu().numpy()
        queries = sample_query_batch(presence, np.ones_like(presence), vocab, args.max_queries, rng, device)
        targets = [lookup.masks(s, queries.target_index) for s in segs]
        spatial = simulate_spatial_prompts(targets[0], queries.valid, generator=rng)
        medals_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            out = medals(x, embeddings[queries.phrasing_index], spatial, queries.valid)
            loss = medals_loss(out, targets, [queries.valid] * len(targets))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(medals.parameters(), 12)
        medals_opt.step()

    def plain_step():
        plain_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            out = plain(x)
            loss = plain_loss(out, segs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 12)
        plain_opt.step()

    steps = {"nnUNetTrainer": plain_step, "MedalSTrainer": medals_step}
    times = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3 if args.quick else 10):
        for name, fn in steps.items():
            times[name].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    preset = "real" if args.real else "cpu"
    print(f"training step, preset={preset}, batch 2 × {tile}, device={device}, {torch.get_num_threads()} threads, "
          f"{args.max_queries} prompts/sample{', torch.compile' if args.compile else ''}")
    print(f"{'trainer':<16} {'median s/step':>14}")
    for k, v in med.items():
        print(f"{k:<16} {v:>14.3f}")
    result = {"preset": preset, "device": device, "compiled": args.compile, "nnunet_s": round(med["nnUNetTrainer"], 4),
              "medals_s": round(med["MedalSTrainer"], 4),
              "ratio_medals_nnunet": round(med["MedalSTrainer"] / med["nnUNetTrainer"], 3)}
    if device.startswith("cuda"):
        result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    report(result, args.out)


if __name__ == "__main__":
    main()
