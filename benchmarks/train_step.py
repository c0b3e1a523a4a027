"""Time per training step: MedalSTrainer's step vs nnUNetTrainer's on the same backbone and patch.

    python benchmarks/train_step.py            # CPU preset backbone, 2 × 32×48×48 (the phantom's CPU plans)
    python benchmarks/train_step.py --quick    # fewer repeats, under a minute
    python benchmarks/train_step.py --real     # real-size preset (ResEnc-M + reference query decoder), 128³
    python benchmarks/train_step.py --no_fusion_column   # + MedalSTrainer's step with the fusion conv off throughout
    python benchmarks/train_step.py --malloc_default     # both sides with glibc's malloc as it is

Both sides run forward + backward + AdamW/SGD step on the same random batch (data loading and augmentation are
nnU-Net's in both trainers and are left out). The Medal S side runs its train_step's own prompt work
(``training.prompted_batch.build_prompted_batch``: ``max_queries`` prompts per sample, per-query targets at every
deep-supervision scale, misplaced masks + Algorithm 1, a tenth of the steps without fusion), the forward, the
per-query BCE + Dice and its optimiser (fused AdamW); the nnU-Net side SGD as nnUNetTrainer. On CUDA both use
nnU-Net's grad scaler. Left out on the Medal S side: the training-time zoom (``dynamic_zoom_probability`` of the
samples; off in the CPU demo) and the short-field-of-view cut (in the augmentation workers). Runs are interleaved;
medians are reported. ``--no_fusion_column`` adds the Medal S step with the prompt-fusion conv left out in every
step (same network, optimiser and prompt work), so its difference is what the fusion conv costs (slightly under:
the normal column skips it in a tenth of the steps). On CPU both sides run with freed memory kept for reuse, as
MedalSTrainer sets it for CPU training (``training.cpu_memory``; a stock nnUNetTrainer run does not):
``--malloc_default`` measures both without it.
Prints a table, ``RESULT key=value …``, and writes ``benchmarks/results/train_step.json``.
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
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
from nnunetv2_medals.training.cpu_memory import keep_freed_memory
from nnunetv2_medals.training.prompt_sampling import TargetLookup
from nnunetv2_medals.training.prompted_batch import build_prompted_batch
from nnunetv2_medals.trainers.medals_trainer import MedalSTrainer, fused_adamw


#: the --no_fusion_column trainer's name in the tables
NO_FUSION = "MedalSTrainer, no fusion"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_queries", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="also split each step into its parts (waits for the "
                                                                "GPU between parts, so steps get a little slower)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks (as nnU-Net does on "
                                                                "CUDA with nnUNet_compile); compile time is left out")
    parser.add_argument("--no_fusion_column", action="store_true",
                        help="also time MedalSTrainer's step with the prompt-fusion conv left out (its cost)")
    parser.add_argument("--malloc_default", action="store_true",
                        help="leave glibc's malloc as it is (by default both sides keep freed memory for reuse, as "
                             "MedalSTrainer sets it for CPU training: training.cpu_memory)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()
    device = args.device
    kept = not args.malloc_default and device == "cpu" and keep_freed_memory()

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
    # as MedalSTrainer.configure_optimizers
    medals_opt = torch.optim.AdamW(medals.parameters(), 1e-4, weight_decay=0.01,
                                   fused=fused_adamw(torch.device(device)))
    plain_opt = torch.optim.SGD(plain.parameters(), 1e-2, momentum=0.99, nesterov=True)
    weights = nnunet_deep_supervision_weights(n_ds, ddp=False)
    medals_loss = DeepSupervisionWrapper(PromptBCEDiceLoss(), weights)
    plain_loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False},
                                                       {}, dice_class=MemoryEfficientSoftDiceLoss), weights)

    scaler = {k: torch.amp.GradScaler("cuda") if device.startswith("cuda") else None
              for k in ("nnUNetTrainer", "MedalSTrainer", NO_FUSION)}

    def update(trainer: str, loss, network, optimizer) -> None:
        """nnUNetTrainer.train_step's update: (scaled) backward, clipping at 12, step."""
        grad_scaler = scaler[trainer]
        (grad_scaler.scale(loss) if grad_scaler else loss).backward()
        mark(trainer, "backward")
        if grad_scaler:
            grad_scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        if grad_scaler:
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            optimizer.step()
        mark(trainer, "clip + optimizer")

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
        segs.append(segs[-1][:, :, ::2, ::2, ::2].contiguous())

    split: dict[str, dict[str, list[float]]] = {"nnUNetTrainer": {}, "MedalSTrainer": {},
                                                **({NO_FUSION: {}} if args.no_fusion_column else {})}
    clock = {"t": 0.0}

    def mark(trainer: str, part: str | None) -> None:
        """--profile: time since the previous mark, charged to ``part`` (None starts the clock)."""
        if not args.profile:
            return
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        if part is not None:
            split[trainer].setdefault(part, []).append(now - clock["t"])
        clock["t"] = now

    def medals_step(trainer: str = "MedalSTrainer", fuse: bool = True):
        """``fuse=False``: the same step with the prompt-fusion conv left out in every step (what it costs)."""
        mark(trainer, None)
        # MedalSTrainer.train_step's prompt work (every case annotates every target; the trainer's fusion-skip
        # share, so a tenth of the steps run without spatial prompts)
        prompts = build_prompted_batch(segs, np.ones((len(x), n_targets), dtype=bool), lookup, vocab, embeddings,
                                       args.max_queries, MedalSTrainer.p_skip_fusion,
                                       MedalSTrainer.prompt_misplacement, rng,
                                       mark=lambda part: mark(trainer, part))
        medals_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            out = medals(x, prompts.text, prompts.spatial, prompts.valid, fuse_prompts=prompts.fuse and fuse)
            mark(trainer, "forward")
            loss = medals_loss(out, prompts.targets, [prompts.valid] * len(prompts.targets))
        mark(trainer, "loss")
        update(trainer, loss, medals, medals_opt)

    def plain_step():
        mark("nnUNetTrainer", None)
        plain_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            out = plain(x)
            mark("nnUNetTrainer", "forward")
            loss = plain_loss(out, segs)
        mark("nnUNetTrainer", "loss")
        update("nnUNetTrainer", loss, plain, plain_opt)

    steps = {"nnUNetTrainer": plain_step, "MedalSTrainer": medals_step}
    if args.no_fusion_column:
        steps[NO_FUSION] = lambda: medals_step(NO_FUSION, fuse=False)
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
          f"{args.max_queries} prompts/sample{', torch.compile' if args.compile else ''}"
          f"{', freed memory kept (both sides)' if kept else ''}")
    print(f"{'trainer':<24} {'median s/step':>14}")
    for k, v in med.items():
        print(f"{k:<24} {v:>14.3f}")
    if args.profile:
        print(f"{'part of the step (median s)':<44} " + " ".join(f"{t:>14}" for t in split))
        parts = list(dict.fromkeys([*split["MedalSTrainer"], *split["nnUNetTrainer"]]))
        for part in parts:
            cells = [statistics.median(split[t][part][1:]) if part in split[t] else None for t in split]
            print(f"{part:<44} " + " ".join(f"{'-' if c is None else format(c, '.4f'):>14}" for c in cells))
    result = {"preset": preset, "device": device, "compiled": args.compile, "freed_memory_kept": kept,
              "nnunet_s": round(med["nnUNetTrainer"], 4),
              "medals_s": round(med["MedalSTrainer"], 4),
              "ratio_medals_nnunet": round(med["MedalSTrainer"] / med["nnUNetTrainer"], 3)}
    if args.no_fusion_column:
        result["medals_no_fusion_s"] = round(med[NO_FUSION], 4)
        result["ratio_medals_no_fusion_nnunet"] = round(med[NO_FUSION] / med["nnUNetTrainer"], 3)
    if args.profile:
        for trainer, parts in split.items():
            for part, values in parts.items():
                key = re.sub(r"\W+", "_", part.split(" (")[0]).strip("_")
                name = re.sub(r"\W+", "_", trainer).strip("_")
                result[f"{name}_{key}_s"] = round(statistics.median(values[1:]), 4)
    if device.startswith("cuda"):
        result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    report(result, args.out)


if __name__ == "__main__":
    main()
