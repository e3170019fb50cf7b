"""Which hardware computes bfloat16 natively, and the precision policy that follows from it.

bfloat16 halves the bytes of every activation and, where the hardware has bfloat16 arithmetic, doubles the
matmul rate: on a CPU with AVX512-BF16 (``avx512_bf16``), AMX (``amx_bf16``) or Arm's BF16 extension
(``bf16``), on an NVIDIA GPU of compute capability 8.0 or newer (A100, H100, L4, RTX 30xx and later), on a
TPU. Elsewhere it is emulated: every product is widened to float32 and rounded back, which is slower than
float32 itself (docs/benchmarks.md, "Which precision `auto` picks"). So :func:`auto_policy` picks
``"mixed_bfloat16"`` only where :func:`native_bfloat16` says so, else ``"float32"``.

Reading the CPU needs no framework; :func:`find_accelerators` asks the Keras backend in use, on first call.
"""

from __future__ import annotations

import platform
import subprocess
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Sequence

# CPU feature flags (as /proc/cpuinfo spells them) that compute bfloat16 dot products, and their names.
# ``amx_tile`` alone is only the tile registers: AMX multiplies bfloat16 with ``amx_bf16``.
BFLOAT16_CPU_UNITS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX", "bf16": "Arm BF16"}
VECTOR_FLAGS = ("avx512f", "avx2", "fma", "asimd", "sve")  # the widest vector units, as cpu_kind lists them
MIN_BFLOAT16_COMPUTE_CAPABILITY = (8, 0)  # NVIDIA Ampere: the first tensor cores with bfloat16
CPUINFO = "/proc/cpuinfo"


class Accelerator(NamedTuple):
    """A device that computes a model instead of the CPU.

    Attributes:
        kind: ``"gpu"`` or ``"tpu"``.
        name: the device's name as its framework reports it, e.g. ``"NVIDIA H100 80GB HBM3"``.
        compute_capability: ``(major, minor)`` of an NVIDIA GPU; None where unknown (TPUs, AMD GPUs).

    Example:
        >>> Accelerator("gpu", "NVIDIA A100-SXM4-80GB", (8, 0)).compute_capability
        (8, 0)
    """

    kind: str
    name: str
    compute_capability: tuple[int, int] | None = None


def read_cpu_flags(path: str = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags: the ``flags`` (x86) or ``Features`` (Arm) line of ``/proc/cpuinfo``.

    Where that file does not exist: macOS' ``sysctl`` feature lists (lower-cased; an Apple chip with
    ``hw.optional.arm.FEAT_BF16`` gets ``bf16``); elsewhere an empty set, which reads as "no native bfloat16",
    the choice that is never slow.

    Args:
        path: the cpuinfo file to read (tests pass a fake one).

    Returns:
        The flags of the first processor listed, e.g. ``frozenset({"avx2", "fma", ...})``.

    Example:
        >>> flags = read_cpu_flags()
        >>> isinstance(flags, frozenset) and all(flag == flag.lower() for flag in flags)
        True
    """
    cpuinfo = Path(path)
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return frozenset(value.lower().split())
        return frozenset()
    if platform.system() == "Darwin":
        return _darwin_cpu_flags()
    return frozenset()


def _darwin_cpu_flags() -> frozenset[str]:
    """macOS: the sysctl feature lists, lower-cased, plus ``bf16`` where an Apple chip has FEAT_BF16."""
    flags: set[str] = set()
    for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features", "hw.optional.arm.FEAT_BF16"):
        try:
            value = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if key.endswith("FEAT_BF16"):
            flags.update(["bf16"] if value.strip() == "1" else [])
        else:
            flags.update(value.lower().replace(".", "_").split())
    return frozenset(flags)


def read_cpu_model(path: str = CPUINFO) -> str:
    """The CPU's marketing name: ``model name`` in ``/proc/cpuinfo``, else what :mod:`platform` knows.

    Args:
        path: the cpuinfo file to read.

    Returns:
        e.g. ``"AMD EPYC 9R14 96-Core Processor"``; the machine type (``"x86_64"``) where nothing better is known.

    Example:
        >>> isinstance(read_cpu_model(), str) and len(read_cpu_model()) > 0
        True
    """
    cpuinfo = Path(path)
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bfloat16_units(cpu_flags: Sequence[str] | None = None) -> list[str]:
    """The CPU's units that compute bfloat16 (empty: bfloat16 is emulated on this CPU).

    Args:
        cpu_flags: feature flags; default: this machine's (:func:`read_cpu_flags`).

    Returns:
        Names such as ``["AVX512-BF16", "AMX"]``, in a fixed order.

    Example:
        >>> cpu_bfloat16_units({"avx2", "fma", "avx512f", "avx512_bf16"})
        ['AVX512-BF16']
        >>> cpu_bfloat16_units({"avx2", "fma"})
        []
    """
    flags = set(read_cpu_flags() if cpu_flags is None else cpu_flags)
    return [name for flag, name in BFLOAT16_CPU_UNITS.items() if flag in flags]


def cpu_kind(cpu_flags: Sequence[str] | None = None, model: str | None = None) -> str:
    """One line saying which kind of CPU this is, for benchmark output and logs.

    Args:
        cpu_flags: feature flags; default: this machine's.
        model: the CPU's name; default: this machine's (:func:`read_cpu_model`).

    Returns:
        e.g. ``"AMD EPYC, avx2 fma, no native bf16"`` or ``"AMD EPYC, avx512f avx2 fma, native bf16
        (AVX512-BF16)"``.

    Example:
        >>> cpu_kind({"avx2", "fma", "sse2"}, model="AMD EPYC")
        'AMD EPYC, avx2 fma, no native bf16'
        >>> cpu_kind({"avx512f", "avx2", "fma", "amx_tile", "amx_bf16"}, model="Intel Xeon")
        'Intel Xeon, avx512f avx2 fma, native bf16 (AMX)'
    """
    flags = set(read_cpu_flags() if cpu_flags is None else cpu_flags)
    vector = " ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "vector units unknown"
    units = cpu_bfloat16_units(flags)
    bf16 = f"native bf16 ({', '.join(units)})" if units else "no native bf16"
    return f"{read_cpu_model() if model is None else model}, {vector}, {bf16}"


def find_accelerators() -> list[Accelerator]:
    """The GPUs and TPUs the Keras backend in use computes on (empty on a CPU-only machine).

    TensorFlow: ``tf.config.list_physical_devices`` with ``get_device_details`` (name, compute capability);
    JAX: ``jax.devices()``; PyTorch: ``torch.cuda``.

    Returns:
        One :class:`Accelerator` per device.

    Example:
        >>> all(device.kind in ("gpu", "tpu") for device in find_accelerators())
        True
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for kind in ("GPU", "TPU"):
            for device in tf.config.list_physical_devices(kind):
                details = tf.config.experimental.get_device_details(device) if kind == "GPU" else {}
                capability = details.get("compute_capability")
                found.append(Accelerator(kind.lower(), details.get("device_name", device.name),
                                         tuple(capability) if capability else None))
        return found
    if backend == "jax":
        import jax

        return [Accelerator(device.platform, device.device_kind, _parse_capability(
            getattr(device, "compute_capability", None))) for device in jax.devices()
            if device.platform in ("gpu", "tpu")]
    if backend == "torch":
        import torch

        return [Accelerator("gpu", torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return []


def _parse_capability(value) -> tuple[int, int] | None:
    """``"9.0"`` (JAX's spelling) -> ``(9, 0)``; None when absent or unreadable."""
    try:
        major, minor = str(value).split(".")[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def accelerator_bfloat16(device: Accelerator) -> bool:
    """Whether ``device`` computes bfloat16 natively: any TPU, an NVIDIA GPU of compute capability >= 8.0.

    A GPU whose capability is unknown (an AMD GPU) counts as not native: float32 is never the slow choice.

    Args:
        device: the accelerator.

    Returns:
        True where its bfloat16 matmuls run on bfloat16 hardware.

    Example:
        >>> accelerator_bfloat16(Accelerator("gpu", "NVIDIA H100 80GB HBM3", (9, 0)))
        True
        >>> accelerator_bfloat16(Accelerator("gpu", "Tesla V100-SXM2-16GB", (7, 0)))
        False
    """
    if device.kind == "tpu":
        return True
    return device.compute_capability is not None and tuple(device.compute_capability) >= \
        MIN_BFLOAT16_COMPUTE_CAPABILITY


def native_bfloat16(cpu_flags: Sequence[str] | None = None,
                    accelerators: Sequence[Accelerator] | None = None) -> bool:
    """Whether the hardware a model runs on computes bfloat16 natively.

    With accelerators, they compute the model: all of them must have bfloat16 units. Without, the CPU must
    (:func:`cpu_bfloat16_units`).

    Args:
        cpu_flags: the CPU's feature flags; default: this machine's.
        accelerators: the GPUs/TPUs; default: :func:`find_accelerators` (``[]``: CPU only).

    Returns:
        True where ``mixed_bfloat16`` runs faster than float32.

    Example:
        >>> native_bfloat16({"avx2", "fma", "avx512_bf16"}, accelerators=[])
        True
        >>> native_bfloat16({"avx2", "fma"}, accelerators=[])
        False
        >>> native_bfloat16({"avx2", "fma"}, accelerators=[Accelerator("gpu", "NVIDIA L4", (8, 9))])
        True
    """
    devices = find_accelerators() if accelerators is None else list(accelerators)
    if devices:
        return all(accelerator_bfloat16(device) for device in devices)
    return bool(cpu_bfloat16_units(cpu_flags))


def hardware_kind(cpu_flags: Sequence[str] | None = None,
                  accelerators: Sequence[Accelerator] | None = None) -> str:
    """What the model computes on, in words: the accelerators if any, else :func:`cpu_kind`.

    Args:
        cpu_flags: the CPU's feature flags; default: this machine's.
        accelerators: the GPUs/TPUs; default: :func:`find_accelerators`.

    Returns:
        e.g. ``"1 x NVIDIA H200 (compute capability 9.0)"`` or ``"AMD EPYC, avx2 fma, no native bf16"``.

    Example:
        >>> hardware_kind(accelerators=[Accelerator("gpu", "NVIDIA H200", (9, 0))])
        '1 x NVIDIA H200 (compute capability 9.0)'
    """
    devices = find_accelerators() if accelerators is None else list(accelerators)
    if not devices:
        return cpu_kind(cpu_flags)
    labels = Counter(device.name + (f" (compute capability {device.compute_capability[0]}."
                                    f"{device.compute_capability[1]})" if device.compute_capability else "")
                     for device in devices)
    return ", ".join(f"{count} x {label}" for label, count in sorted(labels.items()))


def auto_policy(cpu_flags: Sequence[str] | None = None,
                accelerators: Sequence[Accelerator] | None = None) -> str:
    """The Keras dtype policy that fits the hardware: ``"mixed_bfloat16"`` where bfloat16 is native, else
    ``"float32"``.

    Args:
        cpu_flags: the CPU's feature flags; default: this machine's.
        accelerators: the GPUs/TPUs; default: :func:`find_accelerators`.

    Returns:
        A policy name for ``keras.mixed_precision.set_global_policy``.

    Example:
        >>> auto_policy({"avx2", "fma"}, accelerators=[])
        'float32'
        >>> auto_policy({"avx2", "fma", "amx_tile", "amx_bf16"}, accelerators=[])
        'mixed_bfloat16'
    """
    return "mixed_bfloat16" if native_bfloat16(cpu_flags, accelerators) else "float32"


POLICIES = {"no": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def choose_policy(setting: str = "auto", cpu_flags: Sequence[str] | None = None,
                  accelerators: Sequence[Accelerator] | None = None) -> tuple[str, str]:
    """The policy for a ``--mixed_precision`` setting, and why, in one line for the log.

    Args:
        setting: ``"auto"`` (:func:`auto_policy`), ``"no"`` (float32), ``"bf16"`` or ``"fp16"``.
        cpu_flags: the CPU's feature flags; default: this machine's.
        accelerators: the GPUs/TPUs; default: :func:`find_accelerators`.

    Returns:
        ``(policy, reason)``. An explicit ``"bf16"`` on hardware that emulates bfloat16 is kept, and the
        reason says it will be slow.

    Raises:
        ValueError: for a setting not listed above.

    Example:
        >>> choose_policy("auto", {"avx2", "fma"}, accelerators=[])[0]
        'float32'
        >>> print(choose_policy("bf16", {"avx2", "fma"}, accelerators=[])[1])  # doctest: +ELLIPSIS
        --mixed_precision bf16 -> mixed_bfloat16, but ... no native bf16: bfloat16 is emulated, slower than float32
    """
    if setting != "auto" and setting not in POLICIES:
        raise ValueError(f"unknown mixed precision setting {setting!r}; choose auto, " + ", ".join(POLICIES))
    devices = find_accelerators() if accelerators is None else list(accelerators)
    hardware, native = hardware_kind(cpu_flags, devices), native_bfloat16(cpu_flags, devices)
    policy = auto_policy(cpu_flags, devices) if setting == "auto" else POLICIES[setting]
    reason = f"--mixed_precision {setting} -> {policy}"
    if setting == "auto":
        why = "bfloat16 is native there" if native else "bfloat16 would be emulated there (slow); XLA stays on"
        return policy, f"{reason} on {hardware}: {why}"
    if policy == "mixed_bfloat16" and not native:
        return policy, f"{reason}, but {hardware}: bfloat16 is emulated, slower than float32"
    return policy, f"{reason} on {hardware}"
