"""nnunetv2-medals: text- and mask-prompted 3D segmentation (Medal S) as an nnU-Net v2 extension.

Kept import-light on purpose: the start-up hook imports a submodule of this package in every interpreter of the
environment, so nothing heavy (torch, nnunetv2) may be imported here.
"""
__version__ = "0.1.0"
