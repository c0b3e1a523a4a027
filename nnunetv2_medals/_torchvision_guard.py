"""Keep ``import torchvision`` working beside a CPU-only torch.

nnU-Net's dependency chain (dynamic-network-architectures -> timm -> torchvision) resolves a torchvision wheel built
for CUDA torch. Next to the CPU torch its compiled ops fail to load, and ``torchvision/_meta_registrations.py`` then
crashes on ``register_fake("torchvision::nms")`` ("operator torchvision::nms does not exist"). That breaks
``transformers``' BERT import and the stock ``nnUNetv2_train/-predict -tr NAME`` lookup, which imports nnU-Net's
primus trainers (-> timm -> torchvision) before it reaches ``nnUNet_extTrainer``.

A ``.pth`` file installed with this package calls :func:`install` at interpreter start-up. It only adds a
one-shot import finder; torch is imported only when torchvision itself is being imported, and the two missing
operator schemas are defined only when torchvision's own ops failed to load. Where torchvision works (e.g. CUDA
builds on GPU machines) nothing is changed. Detection ops (nms) stay unusable, which nothing here needs.
"""
import importlib.abc
import sys

_TRIGGER = "torchvision._meta_registrations"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# torch.library.Library unregisters its definitions when garbage collected; keep it alive.
_library = None


def define_missing_torchvision_schemas() -> bool:
    """Define the operator schemas torchvision's meta registrations expect, if its ops did not load.

    Must run after ``torchvision.extension`` was imported (it tries to load the compiled ops) and before
    ``torchvision._meta_registrations``. Returns True when schemas were defined.
    """
    global _library
    import torch
    import torchvision.extension

    if _library is not None or torchvision.extension._has_ops():
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    return True


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == _TRIGGER:
            uninstall()
            define_missing_torchvision_schemas()
        return None  # the regular finders load the module


def install() -> None:
    """Register the one-shot finder (idempotent); a no-op when torchvision was already imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionFinder)]
