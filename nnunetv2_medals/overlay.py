"""PNG overlay of a prediction: three orthogonal slices through each found structure."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunetv2_medals.io_utils import atomic_write_bytes


def write_overlay_png(image: np.ndarray, label_map: np.ndarray, names: dict[int, str], path: str | Path,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
    """One row per label present in ``label_map`` (*S, axes z, y, x): axial, coronal and sagittal slices through
    the structure's centre of mass, the image in grey and the label in colour. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [v for v in names if (label_map == v).any()]
    rows = max(1, len(present))
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    lo, hi = np.percentile(image, (1, 99))
    cmap = plt.get_cmap("tab10")
    for r, value in enumerate(present or [None]):
        centre = (np.round(ndimage.center_of_mass(label_map == value)).astype(int) if value is not None
                  else np.array(label_map.shape) // 2)
        for c, (axis, title) in enumerate(((0, "axial"), (1, "coronal"), (2, "sagittal"))):
            ax = axes[r, c]
            img = np.take(image, centre[axis], axis=axis)
            lab = np.take(label_map, centre[axis], axis=axis)
            aspect = [spacing[i] for i in range(3) if i != axis]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect[0] / aspect[1], origin="lower")
            for v in names:
                if (lab == v).any():
                    rgba = np.zeros((*lab.shape, 4))
                    rgba[lab == v] = (*cmap(v % 10)[:3], 0.45 if v == value else 0.2)
                    ax.imshow(rgba, aspect=aspect[0] / aspect[1], origin="lower")
            ax.set_title(f"{names.get(value, 'nothing found')} - {title}" if value is not None else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
