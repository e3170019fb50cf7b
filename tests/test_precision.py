"""Precision that fits the hardware: bfloat16 only where the CPU (AVX512-BF16, AMX) or the accelerator (compute
capability >= 8.0, TPU) computes it natively, else float32 with XLA. The CPU is faked through cpuinfo files and
flag sets written out here, so the decision is tested for kinds of machine this one is not."""

import importlib
import re
import sys
from pathlib import Path

import keras
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, precision
from vanilla_transformer.modeling import default_jit_compile
from vanilla_transformer.precision import (
    Accelerator,
    auto_policy,
    choose_policy,
    cpu_bfloat16_units,
    cpu_kind,
    native_bfloat16,
    read_cpu_flags,
    read_cpu_model,
)

ROOT = Path(__file__).resolve().parents[1]
X86_BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx lm pni ssse3 sse4_1 sse4_2 avx f16c"
CPUS = {  # name: (model name, flags line, expected policy, expected cpu_kind)
    "zen4_avx512_bf16": ("AMD EPYC 9R14 96-Core Processor",
                         X86_BASE + " fma avx2 avx512f avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni",
                         "mixed_bfloat16", "AMD EPYC 9R14 96-Core Processor, avx512f avx2 fma, native bf16 "
                                           "(AVX512-BF16)"),
    "sapphire_rapids_amx": ("Intel(R) Xeon(R) Platinum 8488C",
                            X86_BASE + " fma avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8",
                            "mixed_bfloat16", "Intel(R) Xeon(R) Platinum 8488C, avx512f avx2 fma, native bf16 "
                                              "(AVX512-BF16, AMX)"),
    "zen3_avx2_fma": ("AMD EPYC 7B13", X86_BASE + " fma avx2 bmi2",
                      "float32", "AMD EPYC 7B13, avx2 fma, no native bf16"),
    "amx_tile_without_bf16": ("Fake Xeon", X86_BASE + " fma avx2 amx_tile amx_int8",
                              "float32", "Fake Xeon, avx2 fma, no native bf16"),
}


def fake_cpuinfo(tmp_path, model, flags, processors=2):
    """A /proc/cpuinfo as Linux writes it on x86: one block per logical processor, tab-aligned keys."""
    blocks = [f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: {model}\nflags\t\t: {flags}\n"
              f"bugs\t\t: sysret_ss_attrs\n" for i in range(processors)]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks))
    return str(path)


@pytest.mark.parametrize("name", sorted(CPUS))
def test_the_policy_follows_the_cpus_bfloat16_units(tmp_path, name):
    model, flags_line, expected_policy, expected_kind = CPUS[name]
    path = fake_cpuinfo(tmp_path, model, flags_line)
    flags = read_cpu_flags(path)
    assert flags == frozenset(flags_line.split())
    assert read_cpu_model(path) == model
    assert auto_policy(flags, accelerators=[]) == expected_policy
    assert native_bfloat16(flags, accelerators=[]) is (expected_policy == "mixed_bfloat16")
    assert cpu_kind(flags, model=model) == expected_kind
    policy, reason = choose_policy("auto", flags, accelerators=[])
    assert policy == expected_policy and expected_kind.partition(", ")[2] in reason  # the flags, not the model
    assert ("emulated" in reason) is (expected_policy == "float32")


def test_an_arm_cpu_reads_its_features_line(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"
                    "CPU implementer\t: 0x41\n")
    flags = read_cpu_flags(str(path))
    assert {"asimd", "sve", "bf16"} <= flags and cpu_bfloat16_units(flags) == ["Arm BF16"]
    assert auto_policy(flags, accelerators=[]) == "mixed_bfloat16"


def test_without_cpuinfo_an_unknown_system_reads_as_no_native_bfloat16(tmp_path, monkeypatch):
    monkeypatch.setattr(precision.platform, "system", lambda: "Windows")
    flags = read_cpu_flags(str(tmp_path / "absent"))
    assert flags == frozenset() and auto_policy(flags, accelerators=[]) == "float32"
    assert read_cpu_model(str(tmp_path / "absent"))  # platform's name for the processor, never empty


def test_the_accelerator_decides_when_there_is_one():
    avx2, avx512_bf16 = {"avx2", "fma"}, {"avx2", "fma", "avx512_bf16"}
    h100 = Accelerator("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
    a100 = Accelerator("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))
    v100 = Accelerator("gpu", "Tesla V100-SXM2-16GB", (7, 0))
    t4 = Accelerator("gpu", "Tesla T4", (7, 5))
    amd = Accelerator("gpu", "AMD Instinct MI250X", None)
    tpu = Accelerator("tpu", "TPU v4")
    assert auto_policy(avx2, [h100]) == "mixed_bfloat16"  # a slow CPU does not matter: the GPU computes
    assert auto_policy(avx2, [a100, a100]) == "mixed_bfloat16"
    assert auto_policy(avx2, [tpu]) == "mixed_bfloat16"
    assert auto_policy(avx512_bf16, [v100]) == "float32"  # nor does a fast one
    assert auto_policy(avx512_bf16, [t4]) == "float32"
    assert auto_policy(avx2, [a100, v100]) == "float32"  # every replica must compute it
    assert auto_policy(avx2, [amd]) == "float32"  # unknown: float32, never the slow choice
    policy, reason = choose_policy("auto", avx2, [h100, h100])
    assert policy == "mixed_bfloat16" and "2 x NVIDIA H100 80GB HBM3 (compute capability 9.0)" in reason


def test_explicit_settings_are_kept_and_emulated_bfloat16_is_named():
    avx2 = {"avx2", "fma"}
    assert choose_policy("no", avx2, [])[0] == "float32"
    assert choose_policy("fp16", avx2, [])[0] == "mixed_float16"
    policy, reason = choose_policy("bf16", avx2, [])
    assert policy == "mixed_bfloat16" and "emulated" in reason and "no native bf16" in reason
    policy, reason = choose_policy("bf16", {"avx512_bf16"}, [])
    assert policy == "mixed_bfloat16" and "emulated" not in reason
    with pytest.raises(ValueError, match="unknown mixed precision setting 'bfloat16'"):
        choose_policy("bfloat16", avx2, [])


def test_this_machines_flags_match_proc_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    line = re.search(r"^(flags|Features)\s*:(.*)$", cpuinfo.read_text(), re.MULTILINE)
    assert read_cpu_flags() == frozenset(line.group(2).split())
    assert cpu_kind().endswith("no native bf16") is not bool({"avx512_bf16", "amx_bf16", "bf16"} & read_cpu_flags())


@pytest.fixture
def bf16_model():
    config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32)
    return TransformerForSeq2SeqLM(config, dtype="mixed_bfloat16"), TransformerForSeq2SeqLM(config)


def cpu_only():
    return all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())


def test_compile_keeps_xla_for_bfloat16_on_a_cpu_that_emulates_it(bf16_model, monkeypatch):
    """avx2 + fma only: TensorFlow's kernels would emulate bfloat16, XLA's float32 dots are faster, so XLA stays
    on; with AVX512-BF16 (oneDNN's bfloat16 kernels) it goes off on a CPU-only machine."""
    if keras.backend.backend() != "tensorflow" or not cpu_only():
        pytest.skip("the CPU rule applies to TensorFlow on a CPU-only machine")
    bf16, fp32 = bf16_model
    assert default_jit_compile(bf16, cpu_flags={"avx2", "fma"}) is True
    assert default_jit_compile(bf16, cpu_flags={"avx2", "fma", "avx512_bf16"}) is False
    assert default_jit_compile(bf16, cpu_flags={"avx2", "amx_tile", "amx_bf16"}) is False
    assert default_jit_compile(fp32, cpu_flags={"avx2", "fma", "avx512_bf16"}) is True
    for flags, xla in (({"avx2", "fma"}, True), ({"avx2", "fma", "avx512_bf16"}, False)):
        monkeypatch.setattr(precision, "read_cpu_flags", lambda path=None, flags=flags: frozenset(flags))
        bf16.compile()
        assert bool(bf16.jit_compile) is xla, flags


def test_run_translation_defaults_to_auto_and_logs_the_choice(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        run_translation = importlib.import_module("run_translation")
    finally:
        sys.path.remove(str(ROOT / "examples"))
    args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t"])
    assert args.mixed_precision == "auto"
    monkeypatch.setattr(precision, "find_accelerators", lambda: [])
    try:
        for flags, expected in (({"avx2", "fma"}, "float32"), ({"avx2", "avx512_bf16"}, "mixed_bfloat16")):
            monkeypatch.setattr(precision, "read_cpu_flags", lambda path=None, flags=flags: frozenset(flags))
            assert run_translation.set_precision(args) == expected
            assert keras.mixed_precision.global_policy().name == expected
            assert f"precision: --mixed_precision auto -> {expected}" in capsys.readouterr().out
        args.num_train_epochs = 0  # evaluation only: scores decode in float32
        assert run_translation.set_precision(args) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
