"""What every benchmark script shares: timing a call on any device, and reporting its RESULT line + JSON."""
from __future__ import annotations

import json
import platform
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


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory of a block above what was in use when it started: the process's peak RSS (Linux: the kernel's
    high-water mark, reset at the start through /proc/self/clear_refs, so nothing samples alongside the work) and,
    on CUDA, ``torch.cuda.max_memory_allocated``. Use as ``with PeakMemory(device) as m: …``, then ``m.cpu_mib`` /
    ``m.gpu_mib``."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.cpu_mib = self.gpu_mib = None

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self._base = _status_kib("VmRSS")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._gpu_base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.gpu_mib = (torch.cuda.max_memory_allocated() - self._gpu_base) / 2 ** 20
        self.cpu_mib = (_status_kib("VmHWM") - self._base) / 1024
        return False


def machine() -> str:
    """One line naming the machine: CPU model and threads, or the GPU."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads (torch {torch.__version__})"
