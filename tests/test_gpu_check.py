"""benchmarks/gpu_check.py, the one-command accelerator check, runs on a CPU with its smoke sizes and writes the
JSON it promises: training steps/s, FLOPs (checked against the model's own weight matrices), MFU (none
without a known peak), peak memory, and generate throughput for greedy and beam 4."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer.precision import cpu_kind

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def counted_flops(config, batch, src, tgt):
    """FLOPs of one training step counted from the model's weights: 6 x (kernel parameters each token passes
    through) per token -- encoder kernels and the cross-attention K/V for source tokens, the other decoder
    kernels and the tied output projection for target tokens -- plus QK^T and AV (forward + 2 x backward)."""
    model = TransformerForSeq2SeqLM(config).build_weights()
    kernels = {name: int(np.prod(v.shape)) for name, v in model.named_variables().items() if name.endswith(".kernel")}
    encoder = sum(size for name, size in kernels.items() if name.startswith("encoder."))
    cross_kv = sum(size for name, size in kernels.items() if ".cross_attn.k_proj." in name or ".cross_attn.v_proj." in name)
    decoder = sum(size for name, size in kernels.items() if name.startswith("decoder.")) - cross_kv
    per_source, per_target = encoder + cross_kv, decoder + config.d_model * config.vocab_size
    attention = 3 * batch * config.num_decoder_layers * 4 * config.d_model * (src * src + tgt * tgt + tgt * src)
    return 6 * batch * (src * per_source + tgt * per_target) + attention, model.count_params()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_check") / "check.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--steps", "2", "--warmup", "1",
                           "--output", str(output)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(output.read_text()), done.stdout, time.perf_counter() - started


@pytest.mark.slow
def test_the_cpu_smoke_run_reports_training_in_bfloat16_with_xla(smoke):
    result, stdout, wall = smoke
    assert result["mode"] == "cpu-smoke" and result["accelerators"] == [] and result["peak_bf16_flops_per_s"] is None
    assert result["policy"] == "mixed_bfloat16" and result["jit_compile"] is True
    assert result["cpu_kind"] == cpu_kind() and result["versions"]["tensorflow"]
    assert result["wall_s"] < result["budget_s"] and wall < 300
    assert set(result["train"]) == {"transformer-base", "transformer-big"}
    for preset, run in result["train"].items():
        size = run["config"]
        assert run["preset"] == preset and run["compute_dtype"] == "bfloat16" and run["jit_compile"] is True
        config = TransformerConfig.from_preset(preset, d_model=size["d_model"], num_heads=size["heads"],
                                               d_ff=size["d_ff"], num_encoder_layers=size["layers"],
                                               num_decoder_layers=size["layers"], vocab_size=size["vocab"])
        flops, params = counted_flops(config, size["batch"], size["src_len"], size["tgt_len"])
        assert run["flops_per_step"] == flops and run["params"] == params
        assert run["tokens_per_step"] == size["batch"] * (size["src_len"] + size["tgt_len"])
        assert run["steps_per_s"] > 0 and math.isclose(run["steps_per_s"] * run["step_time_median_s"], 1.0)
        assert math.isclose(run["tokens_per_s"], run["tokens_per_step"] * run["steps_per_s"])
        assert math.isclose(run["achieved_flops_per_s"], flops * run["steps_per_s"])
        assert run["mfu"] is None and run["peak_flops_per_s"] is None  # no datasheet peak for a CPU
        assert run["peak_memory_bytes"] > 100 * 2 ** 20  # a process with TensorFlow loaded
        assert 0 < run["loss_last"] < 3 * math.log(size["vocab"])
    assert "MFU: unknown peak" in stdout and "wrote" in stdout


@pytest.mark.slow
def test_the_cpu_smoke_run_reports_generate_throughput(smoke):
    result, _, _ = smoke
    assert result["generate_preset"] == "transformer-base"
    assert set(result["generate"]) == {"greedy", "beam-4"}
    for method, run in result["generate"].items():
        assert run["num_beams"] == (4 if method == "beam-4" else 1)
        assert run["output_shape"][0] == run["batch"] and run["output_shape"][1] >= run["new_tokens"]
        assert math.isclose(run["new_tokens_per_s"], run["batch"] * run["new_tokens"] / run["call_s"])
        assert run["peak_memory_bytes"] > 0


def test_the_peak_table_matches_device_names():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert gpu_check.peak_bf16_flops("NVIDIA H200") == 989e12
    assert gpu_check.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_check.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.peak_bf16_flops("NVIDIA L40S") == 362e12 and gpu_check.peak_bf16_flops("NVIDIA L4") == 121e12
    assert gpu_check.peak_bf16_flops("Tesla V100-SXM2-16GB") is None and gpu_check.peak_bf16_flops(None) is None
