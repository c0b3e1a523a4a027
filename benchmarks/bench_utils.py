"""What every benchmark script shares: timing a call on any device, and reporting its RESULT line + JSON."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: str | torch.device) -> float:
    """Seconds one call of ``fn`` takes, waiting for queued GPU work before and after."""
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def report(result: dict, out: str | Path) -> None:
    """Print ``RESULT key=value …`` (list values left out) and write the same dict as JSON to ``out``."""
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, list)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
