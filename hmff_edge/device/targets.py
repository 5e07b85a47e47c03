"""The Raspberry Pi boards the emulator imitates: QEMU CPU model and a Pi-like /proc/cpuinfo.

XNNPACK picks its kernels from cpuinfo, which reads ``/proc/cpuinfo`` and
``/sys/devices/system/cpu/{possible,present}``; under qemu-user those describe the host (or
cannot be parsed), so the emulated root gets files that describe the board instead, and
``QEMU_CPU`` makes the instruction set the board's (no SVE, no i8mm on a Pi 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from hmff_edge.errors import ConfigError


@dataclass(frozen=True)
class Target:
    """One emulated board."""

    name: str  # rpi4 | rpi5
    board: str
    qemu_cpu: str  # QEMU_CPU value
    cores: int
    cpu_part: str  # ARM "CPU part" of the core (cpuinfo identifies the core by it)
    cpu_variant: str
    cpu_revision: int
    features: str  # the Features line a Pi's kernel prints

    @property
    def cpu_label(self) -> str:
        """What the runner sees as the CPU model inside the root."""
        return f"qemu-user {self.qemu_cpu} (emulating {self.board})"

    def cpuinfo(self) -> str:
        """A /proc/cpuinfo in the layout of a Pi's 64-bit kernel."""
        blocks = [
            f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {self.features}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {self.cpu_variant}\n"
            f"CPU part\t: {self.cpu_part}\nCPU revision\t: {self.cpu_revision}\n"
            for i in range(self.cores)]
        return "\n".join(blocks) + f"\nModel\t\t: {self.cpu_label}\n"

    def cpu_list(self) -> str:
        """Contents of ``sys/devices/system/cpu/{possible,present}``."""
        return f"0-{self.cores - 1}\n"


TARGETS: dict[str, Target] = {
    "rpi4": Target(name="rpi4", board="Raspberry Pi 4 Model B", qemu_cpu="cortex-a72", cores=4,
                   cpu_part="0xd08", cpu_variant="0x0", cpu_revision=3,
                   features="fp asimd evtstrm crc32 cpuid"),
    "rpi5": Target(name="rpi5", board="Raspberry Pi 5", qemu_cpu="cortex-a76", cores=4,
                   cpu_part="0xd0b", cpu_variant="0x4", cpu_revision=1,
                   features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                            "cpuid asimdrdm lrcpc dcpop asimddp"),
}


def get_target(name: str) -> Target:
    """The :class:`Target` called ``name``, or a :class:`ConfigError` listing the choices."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown device {name!r}; choose one of "
                          f"{', '.join(TARGETS)}") from None
