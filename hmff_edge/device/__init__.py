"""An emulated Raspberry Pi: a Debian arm64 root under qemu-user with the aarch64 LiteRT,
reached over ssh on 127.0.0.1 like a board (``hmff-edge device emulate rpi4``).

It shows whether an export loads, runs and answers the same with the Arm build of the
runtime and the Arm kernels; its timings are an emulator's, never a device's.
Host-side only (needs root, qemu-user-static, binfmt-support, debootstrap); imports no
TensorFlow.
"""

from hmff_edge.device.emulator import EmulatorInfo, Status, StopReport, emulate, status, stop
from hmff_edge.device.targets import TARGETS, Target, get_target

__all__ = ["TARGETS", "EmulatorInfo", "Status", "StopReport", "Target", "emulate",
           "get_target", "status", "stop"]
