"""The challenge's own phrasings as wordings a trained model never saw: how its prompts are read, and prompt files to
score them with.

    python benchmarks/challenge_wordings.py CHECKPOINT [--modality CT]
    python benchmarks/challenge_wordings.py CHECKPOINT --rounds 5 --test_prompts PROMPTS_JSON --dataset_json DS_JSON \
        --out DIR

For every structure of the model that is a class of the challenge's map (``class_of_name``), every phrasing of
that class in the challenge's prompt file (packaged copy) that is not a trained phrasing is matched against the
model's vocabulary (``ModelVocabulary.resolve``, as prediction does). Counted: read as the structure (canonical /
side corrected), kept as its own embedding with the structure nearest, kept with another target nearest, and read
as another target (wrong). Then every phrasing of the challenge's classes of that modality which the model does
*not* know: read as a target (wrong), refused (a side with no counterpart), kept as its own embedding - and, for
both groups, how many
prompts kept as their own embedding have their nearest trained phrasing at cosine >= c: what answering such prompts
with the nearest target's trained embedding from c on would get right (known structures, nearest target the
structure) and wrong (the others). With ``--rounds``, writes DIR/round_K.json prompt files: for each prompt of
PROMPTS_JSON (a prompt file whose label values name the dataset's structures), the challenge phrasing number 7K
(cyclic) of its structure - predict and ``evaluate`` each to score unseen wordings at the segmentation level.
Prints a table and ``RESULT key=value ...`` and writes benchmarks/results/challenge_wordings.json.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from bench_utils import report
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.unseen_wordings import challenge_phrasings, unknown_structure_phrasings
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--modality", default=None, help="default: the model's")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--test_prompts")
    parser.add_argument("--dataset_json")
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true", help="accepted like the other benchmarks' (this one takes "
                                                                  "seconds whatever)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "challenge_wordings.json"))
    args = parser.parse_args()

    vocabulary = ModelVocabulary.from_checkpoint(args.checkpoint)
    modality = args.modality or vocabulary.modality or "CT"
    if args.rounds and not (args.test_prompts and args.dataset_json and args.out):
        parser.error("--rounds needs --test_prompts, --dataset_json and --out")
    per_target = challenge_phrasings([t.name for t in vocabulary.targets], modality, vocabulary.phrasings)
    texts = [t for ts in per_target.values() for t in ts]
    meant = [names for names, ts in per_target.items() for _ in ts]
    _, matches = vocabulary.resolve(texts)
    counts = collections.Counter()
    nearest_right = [m.cosine for want, m in zip(meant, matches) if m.target is None and m.nearest_target in want
                     and not m.other_kind]
    nearest_wrong = [m.cosine for want, m in zip(meant, matches) if m.target is None and m.nearest_target not in want
                     and not m.other_kind]
    for want, m in zip(meant, matches):
        if m.target in want:
            counts["read as the structure"] += 1
        elif m.target is not None:
            counts["read as another target"] += 1
            print(f"  another target: {m.text!r} -> {m.target!r} (meant {' / '.join(want)!r})")
        else:
            counts["own embedding, structure nearest" if m.nearest_target in want else
                   "own embedding, another target nearest"] += 1
    print(f"{len(texts)} challenge phrasings ({modality}) of {len(per_target)} structures the model knows:")
    for k in ("read as the structure", "own embedding, structure nearest", "own embedding, another target nearest",
              "read as another target"):
        print(f"  {k:40} {counts[k]:5d}  {counts[k] / max(len(texts), 1):.3f}")
    report({"checkpoint": str(args.checkpoint), "modality": modality, "phrasings": len(texts),
            "structures": len(per_target), "read_as_structure": counts["read as the structure"],
            "own_embedding_structure_nearest": counts["own embedding, structure nearest"],
            "own_embedding_other_nearest": counts["own embedding, another target nearest"],
            "another_target": counts["read as another target"],
            **unknown_structures(vocabulary, modality, nearest_right, nearest_wrong)}, args.results)

    if args.rounds:
        labels = json.loads(Path(args.dataset_json).read_text())["labels"]
        name_of = {v: k for k, v in labels.items() if isinstance(v, int)}
        texts_of = {name: ts for names, ts in per_target.items() for name in names}
        test = json.loads(Path(args.test_prompts).read_text())["prompts"]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for r in range(args.rounds):
            prompts = [{"text": texts_of[name_of[p["label"]]][7 * r % len(texts_of[name_of[p["label"]]])],
                        "label": p["label"]} for p in test if name_of.get(p["label"]) in texts_of]
            (out / f"round_{r}.json").write_text(json.dumps({"modality": modality, "prompts": prompts}, indent=1))
        print(f"{args.rounds} prompt files ({len(prompts)} prompts each) -> {out}")


def unknown_structures(vocabulary: ModelVocabulary, modality: str, nearest_right: list[float],
                       nearest_wrong: list[float]) -> dict:
    """How the phrasings of the challenge's ``modality`` classes the model does not know are read, and the
    nearest-target rule by cosine threshold (``nearest_right``/``nearest_wrong``: cosines of the known structures'
    prompts kept as their own embedding whose nearest target is / is not their structure). Prints a table."""
    texts = unknown_structure_phrasings([t.name for t in vocabulary.targets], modality, vocabulary.phrasings)
    counts, kept = collections.Counter(), []
    for text in texts:                       # one by one: a refusal is an error for the whole batch
        try:
            (m,) = vocabulary.resolve([text])[1]
        except MedalSInputError:
            counts["refused"] += 1
            continue
        if m.target is not None:
            counts["read as a target"] += 1
            print(f"  unknown structure read as a target: {m.text!r} -> {m.target!r}")
        else:
            counts["own embedding"] += 1
            kept.append(m.cosine if not m.other_kind else -1.0)
    print(f"{len(texts)} challenge phrasings ({modality}) of structures the model does not know:")
    for k in ("read as a target", "refused", "own embedding"):
        print(f"  {k:40} {counts[k]:5d}  {counts[k] / max(len(texts), 1):.3f}")
    print("prompts kept as their own embedding (no other kind of structure) whose nearest trained phrasing is at "
          "cosine >= c; the nearest-target rule would read them as that target:")
    print(f"  {'c':>5} {'known, right target':>20} {'known, other target':>20} {'unknown structure':>18}")
    out = {"unknown_phrasings": len(texts), "unknown_read_as_target": counts["read as a target"],
           "unknown_refused": counts["refused"], "unknown_own_embedding": counts["own embedding"]}
    for c in (0.6, 0.7, 0.73, 0.8, 0.9):
        row = [sum(x >= c for x in xs) for xs in (nearest_right, nearest_wrong, kept)]
        print(f"  {c:5.2f} {row[0]:20d} {row[1]:20d} {row[2]:18d}")
        out[f"nearest_rule_{c:.2f}"] = "/".join(map(str, row))
    return out


if __name__ == "__main__":
    main()
