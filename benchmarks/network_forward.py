"""Forward time of MedalSNetwork vs the number of prompts N at a fixed tile (the backbone runs once per tile).

    python benchmarks/network_forward.py            # CPU preset (MedalSPlannerCPU sizes), 48³ tile
    python benchmarks/network_forward.py --quick    # fewer repeats, under a minute
    python benchmarks/network_forward.py --real     # real-size preset (ResEnc-M + reference query decoder)

Runs are interleaved over N (N=1, 8, 24, 1, 8, 24, …) so machine noise hits every N alike; medians are reported.
Prints a table, then ``RESULT key=value …``, and writes the same to ``benchmarks/results/network_forward.json``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch
from torch import nn

from bench_utils import report, timed
from nnunetv2_medals.network.medals_network import MedalSNetwork


def preset_kwargs(real: bool) -> tuple[dict, tuple[int, int, int]]:
    """Architecture kwargs as our planners write them (ResEnc-M topology for a 128³ tile at real size)."""
    if real:
        stages, feats, blocks = 6, (32, 64, 128, 256, 320, 320), (1, 3, 4, 6, 6, 6)
        query = dict(query_dim=768, query_heads=8, query_layers=6, query_ffn_dim=2048, query_mlp_hidden=256)
        tile = (128, 128, 128)
    else:
        stages, feats, blocks = 4, (16, 32, 64, 128), (1, 2, 2, 2)
        query = dict(query_dim=128, query_heads=4, query_layers=2, query_ffn_dim=256, query_mlp_hidden=64)
        tile = (48, 48, 48)
    kwargs = dict(n_stages=stages, features_per_stage=feats, conv_op=nn.Conv3d, kernel_sizes=[[3, 3, 3]] * stages,
                  strides=[[1, 1, 1]] + [[2, 2, 2]] * (stages - 1), n_blocks_per_stage=blocks,
                  n_conv_per_stage_decoder=[1] * (stages - 1), conv_bias=True, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  text_embedding_dim=384, **query)
    return kwargs, tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="real-size preset instead of the CPU preset")
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 8, 24])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "network_forward.json"))
    args = parser.parse_args()

    kwargs, tile = preset_kwargs(args.real)
    net = MedalSNetwork(input_channels=1, num_classes=24, deep_supervision=False, **kwargs).to(args.device).eval()
    params = sum(p.numel() for p in net.parameters())
    query = sum(p.numel() for m in (net.query_decoder, net.prompt_fusion) for p in m.parameters())
    x = torch.randn(1, 1, *tile, device=args.device)
    texts = {n: torch.randn(1, n, 384, device=args.device) for n in args.ns}
    repeats = 3 if args.quick else 7
    times: dict[int, list[float]] = {n: [] for n in args.ns}
    with torch.inference_mode():
        for n in args.ns:  # warm-up
            net(x, texts[n])
        for _ in range(repeats):
            for n in args.ns:
                times[n].append(timed(lambda: net(x, texts[n]), args.device))
    median = {n: statistics.median(t) for n, t in times.items()}
    preset = "real" if args.real else "cpu"
    print(f"MedalSNetwork forward, preset={preset}, tile={tile}, device={args.device} "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), {repeats} repeats")
    print(f"parameters: {params / 1e6:.1f} M (query decoder + fusion {query / 1e6:.1f} M)")
    print(f"{'N':>4} {'median s':>10} {'t(N)/t(1)':>10}")
    for n in args.ns:
        print(f"{n:>4} {median[n]:>10.3f} {median[n] / median[args.ns[0]]:>10.2f}")
    result = {"preset": preset, "device": args.device, "tile": list(tile), "params_m": round(params / 1e6, 2),
              **{f"t{n}_s": round(median[n], 4) for n in args.ns},
              **{f"ratio_{n}_{args.ns[0]}": round(median[n] / median[args.ns[0]], 3) for n in args.ns[1:]}}
    report(result, args.out)


if __name__ == "__main__":
    main()
