"""``nnunetv2_medals ct-example``: the real-CT dataset verb (registered by :mod:`nnunetv2_medals.cli`; the builder
is imported only when the verb runs, so ``--help`` stays instant)."""
from __future__ import annotations

import time

from nnunetv2_medals.paths import dataset_id, raw_dataset_folder


def _cmd_ct_example(args) -> None:
    from nnunetv2_medals.datasets.totalseg_ct import write_ct_example_dataset, write_heldout_dicom
    from nnunetv2_medals.io_utils import read_json

    target = raw_dataset_folder(args.d, "MedalSTotalSegCT", args.o)
    start = time.perf_counter()
    write_ct_example_dataset(target, args.source, args.seed, overwrite=args.overwrite)
    print(f"wrote the CT dataset (TotalSegmentator's example_ct_sm; labels are TotalSegmentator's model output) to "
          f"{target} in {time.perf_counter() - start:.1f} s")
    if args.heldout:
        shared = write_heldout_dicom(args.heldout, read_json(target / "dataset.json"), args.source,
                                     overwrite=args.overwrite)
        print(f"held-out DICOM series (another person, never trained on) and its reference of the {len(shared)} "
              f"structures it shares with the dataset -> {args.heldout}")


def add_ct_example_verb(sub) -> None:
    p = sub.add_parser("ct-example", help="real CT with 40 named structures, left and right (from the "
                                          "totalsegmentator sdist; labels are its model output)")
    p.add_argument("-d", type=dataset_id, required=True, help="dataset id (DatasetDDD_MedalSTotalSegCT)")
    p.add_argument("--source", default=None, help="the totalsegmentator-2.18.0 sdist or its unpacked folder "
                                                  "(default: downloaded once with pip into the cache)")
    p.add_argument("--heldout", default=None, help="also write the held-out DICOM series (another person) and its "
                                                   "reference segmentation into this folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbed validation/test copies")
    p.add_argument("-o", default=None, help="write here instead of $nnUNet_raw/DatasetDDD_MedalSTotalSegCT")
    p.add_argument("--overwrite", action="store_true", help="replace existing dataset and held-out folders")
    p.set_defaults(func=_cmd_ct_example)
