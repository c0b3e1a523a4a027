"""Text cost: embedding every phrasing of the challenge prompt file uncached vs from the on-disk cache.

    python benchmarks/text_cost.py            # all 3,186 phrasings, 3 repeats
    python benchmarks/text_cost.py --quick    # 300 phrasings, 1 repeat
    python benchmarks/text_cost.py --encoder DIR

Uncached = a fresh cache folder (the encoder loads and runs); cached = the same texts again (SQLite look-up only,
the model is not even loaded); also the one-off model load and the prediction-time case: 24 prompts of one image.
Repeats are interleaved, medians reported. Prints a table, ``RESULT key=value …``, writes
``benchmarks/results/text_cost.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
from importlib import resources
from pathlib import Path

import torch

from bench_utils import machine, report, timed
from nnunetv2_medals.text_prompts.embedding_cache import EmbeddingCache
from nnunetv2_medals.text_prompts.encoder import TextEncoder


def challenge_phrasings() -> list[str]:
    prompts = json.loads(resources.files("nnunetv2_medals.text_prompts").joinpath(
        "biomedsegfm_text_prompts.json").read_text())
    texts = [p for classes in prompts.values() for k, v in classes.items() if k != "instance_label" for p in v]
    return list(dict.fromkeys(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default=None, help="local Hugging Face folder (default: packaged MiniLM-L6)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "text_cost.json"))
    args = parser.parse_args()
    texts = challenge_phrasings()
    if args.quick:
        texts, args.repeats = texts[:300], 1
    few = texts[:24]

    uncached, cached, load, few_uncached, few_cached = [], [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(tmp)
            encoder = TextEncoder(args.encoder, device=args.device, cache=cache)
            load.append(timed(encoder._load, args.device))
            uncached.append(timed(lambda: encoder.encode(texts), args.device))
            fresh = TextEncoder(args.encoder, device=args.device, cache=cache)  # a new process's view: no model
            cached.append(timed(lambda: fresh.encode(texts), args.device))
            assert fresh._model is None
            few_cache = EmbeddingCache(Path(tmp) / "few")
            few_encoder = TextEncoder(args.encoder, device=args.device, cache=few_cache)
            few_encoder._model, few_encoder._tokenizer = encoder._model, encoder._tokenizer
            few_uncached.append(timed(lambda: few_encoder.encode(few), args.device))
            few_cached.append(timed(lambda: TextEncoder(args.encoder, cache=few_cache).encode(few), args.device))
    med = {k: statistics.median(v) for k, v in
           dict(uncached=uncached, cached=cached, few_uncached=few_uncached, few_cached=few_cached).items()}
    med["load"] = load[0]  # later loads in the same process hit warm imports and file caches
    n = len(texts)
    print(f"text cost on {machine()}, {datetime.date.today()}, encoder {encoder.id} ({encoder.dim}-d), "
          f"device {args.device}, medians of {args.repeats}")
    print(f"{'what':<36} {'seconds':>9} {'ms / text':>10}")
    print(f"{'model load (first in the process)':<36} {med['load']:>9.3f} {'':>10}")
    print(f"{f'{n} phrasings, uncached':<36} {med['uncached']:>9.3f} {1000 * med['uncached'] / n:>10.3f}")
    print(f"{f'{n} phrasings, cached':<36} {med['cached']:>9.3f} {1000 * med['cached'] / n:>10.3f}")
    print(f"{'24 prompts, uncached (model loaded)':<36} {med['few_uncached']:>9.3f} "
          f"{1000 * med['few_uncached'] / 24:>10.3f}")
    print(f"{'24 prompts, cached':<36} {med['few_cached']:>9.3f} {1000 * med['few_cached'] / 24:>10.3f}")
    report({"device": args.device, "machine": machine(), "date": str(datetime.date.today()), "texts": n,
            "encoder": encoder.id, "load_s": round(med["load"], 3), "uncached_s": round(med["uncached"], 3),
            "cached_s": round(med["cached"], 4), "cache_speedup": round(med["uncached"] / med["cached"], 1),
            "prompts24_uncached_s": round(med["few_uncached"], 4), "prompts24_cached_s": round(med["few_cached"], 4)},
           args.out)


if __name__ == "__main__":
    main()
