"""Did LiteRT start XNNPACK? Under emulation it may silently fall back to reference kernels
(cpuinfo could not read the CPU), which changes int8 answers by up to ~100 steps."""

from __future__ import annotations

from hmff_edge.device.errors import XnnpackError

STARTED = "Created TensorFlow Lite XNNPACK delegate"
CPUINFO_ERROR = "Error in cpuinfo"


def started(stderr: str) -> bool:
    """True when LiteRT's log says the XNNPACK delegate was created and cpuinfo did not fail."""
    return STARTED in stderr and CPUINFO_ERROR not in stderr


def require_started(stderr: str, where: str) -> None:
    """Raise :class:`XnnpackError` quoting the cpuinfo errors when XNNPACK did not start."""
    if started(stderr):
        return
    errors = [ln.strip() for ln in stderr.splitlines() if CPUINFO_ERROR in ln]
    detail = "; ".join(errors[:3]) or "no 'Created TensorFlow Lite XNNPACK delegate' line"
    raise XnnpackError(f"XNNPACK did not start {where} ({detail}): LiteRT ran its reference "
                       f"kernels, whose int8 answers differ from a Pi's. The root needs "
                       f"sys/devices/system/cpu/{{possible,present}}, the Pi-like /proc/cpuinfo "
                       f"bind and QEMU_CPU; 'hmff-edge device stop' then 'device emulate' "
                       f"writes them again")
