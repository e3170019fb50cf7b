"""benchmarks/bench_lora.py: the corrupted captions, and the peft row adapting the same BERT modules as ours."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lora  # noqa: E402


def test_corrupt_swaps_two_adjacent_different_words():
    rng = random.Random(0)
    for caption in ("A man rides a red bike .", "Two dogs play in the snow"):
        corrupted = bench_lora.corrupt(caption, rng)
        before, after = caption.split(), corrupted.split()
        changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert sorted(before) == sorted(after) and len(changed) == 2 and changed[1] == changed[0] + 1
    assert bench_lora.corrupt("la la la", rng) is None


@pytest.mark.parametrize("targets, per_layer", [("q,v", 2), ("q,k,v,o,ffn", 6), ("o", 1), ("ffn", 2)])
def test_the_peft_row_adapts_the_modules_our_targets_name(targets, per_layer):
    """Oracle: peft itself, matching the pattern on transformers' BERT; the count equals ours (per layer: q, k, v,
    o one each, ffn two)."""
    peft = pytest.importorskip("peft")
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = peft.get_peft_model(BertForSequenceClassification(config), peft.LoraConfig(
        r=2, target_modules=bench_lora.bert_module_pattern(targets), task_type="SEQ_CLS"))
    adapted = [name for name, module in model.named_modules() if hasattr(module, "lora_A") and module.lora_A]
    assert len(adapted) == 2 * per_layer
    with pytest.raises(SystemExit, match="query"):
        bench_lora.bert_module_pattern("q,query")
