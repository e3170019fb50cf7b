"""The Hub model card: ``README.md`` of a saved model, YAML metadata (``ModelCardData``) over the
``model_card.md`` template (architecture, hyper-parameters, results).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

TEMPLATE_PATH = Path(__file__).with_name("model_card.md")


def _hub_origin(model) -> str | None:
    """The Hub repo id the model was loaded from (None for local directories and new models)."""
    origin = getattr(model, "name_or_path", None)
    if not isinstance(origin, str) or not origin or os.path.exists(origin):
        return None
    return origin if re.fullmatch(r"[\w.-]+/[\w.-]+", origin) else None


def render_model_card(model, info: dict[str, Any] | None = None) -> ModelCard:
    """The repo's README.md: YAML metadata (``ModelCardData``) and the ``model_card.md`` template.

    ``info`` (merged over ``model.model_card_info``) may hold ``license``, ``datasets``, ``base_model``,
    ``language``, ``hyperparameters`` (dict), ``results`` (dict metric -> value), ``dataset_name``,
    ``repo_id``, ``description``, ``tags``. ``base_model`` defaults to the Hub repo the model was loaded
    from (a fine-tune), unless that is ``repo_id`` itself.

    Args:
        model: one of our models (built here if needed, to count its parameters).
        info: optional card fields, as above; JSON-serialisable values.

    Returns:
        A ``huggingface_hub.ModelCard``: ``card.data`` is the ``ModelCardData`` (``library_name``, ``license``
        (default ``apache-2.0``), ``tags``, ``pipeline_tag``, evaluation results, ...), ``str(card)`` the whole
        README.md text.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.model_card import render_model_card
        >>> card = render_model_card(TransformerForSeq2SeqLM(example_config), {"repo_id": "user/tiny-translator",
        ...                                                            "results": {"BLEU": 12.5}})
        >>> 'library_name: vanilla-transformer' in str(card), card.data.pipeline_tag, card.data.metrics
        (True, 'translation', ['bleu'])
        >>> '| parameters | 1,664 |' in str(card)
        True
    """
    # json round trip: plain dicts/lists (Keras wraps attributes of a model in tracked containers)
    info = json.loads(json.dumps({**getattr(model, "model_card_info", {}), **(info or {})}))
    config = model.config
    if "base_model" not in info:
        origin = _hub_origin(model)
        if origin is not None and origin != info.get("repo_id"):
            info["base_model"] = origin
    results = info.get("results") or {}
    task = model.pipeline_tag
    eval_results = None
    if results:
        from huggingface_hub import EvalResult

        eval_results = [
            EvalResult(task_type=task, dataset_type=info.get("dataset_type", info.get("dataset_name", "custom")),
                       dataset_name=info.get("dataset_name", "custom"), metric_type=metric.lower(),
                       metric_value=float(value))
            for metric, value in results.items()
        ]
    tags = ["keras", "vanilla-transformer", "transformer", config.architecture, task]
    tags += [tag for tag in info.get("tags") or [] if tag not in tags]
    card_data = ModelCardData(
        library_name="vanilla-transformer", license=info.get("license", "apache-2.0"),
        tags=tags, pipeline_tag=task,
        datasets=info.get("datasets"), metrics=sorted({m.lower() for m in results}) or None,
        base_model=info.get("base_model"), language=info.get("language"),
        model_name=info.get("repo_id", type(model).__name__), eval_results=eval_results)
    architecture = {
        "variant": config.architecture, "class": type(model).__name__,
        "encoder layers": config.num_encoder_layers if config.has_encoder else 0,
        "decoder layers": config.num_decoder_layers if config.has_decoder else 0,
        "d_model": config.d_model, "heads": config.num_heads, "d_ff": config.d_ff,
        "vocabulary": config.vocab_size, "positions": f"{config.position_embedding} ({config.max_position_embeddings})",
        "normalisation": "pre-LN" if config.norm_first else "post-LN (paper)",
        "parameters": f"{model.num_parameters():,}",
    }
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), model_class=type(model).__name__,
        repo_id=info.get("repo_id", "path/to/model"), description=info.get("description", ""),
        architecture=architecture, hyperparameters=info.get("hyperparameters") or {}, results=results,
        dataset_name=info.get("dataset_name"), base_model=info.get("base_model"))

