"""Which parts of transformers' ``generate`` contract we keep: every ``GenerationConfig`` field is implemented,
refused with a ``ValueError`` that names it, or a documented no-op; so are ``generate``'s other arguments.

A field is *set* when its value differs from a fresh ``GenerationConfig()``'s. :func:`check_generation_config`
runs on the resolved config of every call (the model's ``generation_config.json`` included), so a refused field
fails whether it came as a keyword or from a file. ``tests/test_generation_contract.py`` enumerates the installed
``GenerationConfig().to_dict()``: a field that a new transformers version adds fails that test until it is
placed in one of the tables below.
"""

from __future__ import annotations

import warnings

from transformers import GenerationConfig

from ..compat import default_generation_params

#: Fields that take effect in our decoding (:mod:`.plan` reads them).
IMPLEMENTED = frozenset({
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "do_sample", "num_beams",
    "use_cache", "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids", "renormalize_logits",
    "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
    "num_return_sequences", "output_scores", "output_logits", "return_dict_in_generate", "pad_token_id",
    "eos_token_id", "decoder_start_token_id",
})

#: Fields accepted and without effect, with the reason: they steer transformers' own machinery (caches,
#: torch.compile, batching servers) or are metadata; our decoding gives the same ids without them.
NO_OPS = {
    "bos_token_id": "metadata: transformers reads it only to build input_ids when none are given; our generate "
                    "requires input_ids",
    "cache_implementation": "transformers' choice of cache class; ours is one static key/value cache",
    "cache_config": "options of transformers' cache classes",
    "max_cache_len": "size of transformers' static cache; ours is sized from the prompt and max_new_tokens",
    "compile_config": "options of transformers' torch.compile; our loop is compiled by XLA / jax.jit",
    "disable_compile": "turns off transformers' torch.compile; ours compiles by backend (eager on PyTorch)",
    "prefill_chunk_size": "splits transformers' prefill into chunks of the same result; ours fills the cache in "
                          "one pass",
    "continuous_batching_config": "options of transformers' continuous-batching server",
    "transformers_version": "metadata: the version that wrote the config",
    "_from_model_config": "metadata: whether transformers derived the config from a model config",
}

_MOVED = "was moved out of transformers 5's generate (to a custom_generate repository) and is not implemented here"
_ASSISTED = "assisted / speculative decoding needs an assistant model, which this package does not run"

#: Fields refused (when set) with the reason given in the error.
REFUSED = {
    "num_beam_groups": f"group (diverse) beam search {_MOVED}",
    "diversity_penalty": f"group (diverse) beam search {_MOVED}",
    "constraints": f"constrained beam search {_MOVED}",
    "force_words_ids": f"constrained beam search {_MOVED}",
    "penalty_alpha": f"contrastive search {_MOVED}",
    "dola_layers": f"DoLa decoding {_MOVED}",
    "low_memory": "transformers 5 refuses it as well (sequential beam search was removed)",
    "output_attentions": "attention weights are not kept by the compiled decoding loop",
    "output_hidden_states": "hidden states are not kept by the compiled decoding loop",
    "guidance_scale": "classifier-free guidance (a second, unconditional forward pass) is not implemented",
    "sequence_bias": "sequence biases are not implemented; bad_words_ids bans single tokens",
    "encoder_repetition_penalty": "the encoder repetition penalty is not implemented",
    "encoder_no_repeat_ngram_size": "the encoder n-gram ban is not implemented",
    "exponential_decay_length_penalty": "the exponential length penalty is not implemented",
    "remove_invalid_values": "the inf/NaN remover is not implemented",
    "top_h": "the top-h warper is not implemented",
    "max_time": "a wall-clock limit cannot stop the compiled loop; bound max_new_tokens instead",
    "stop_strings": "stop strings need the tokenizer at every step, outside the compiled loop; use eos_token_id",
    "token_healing": "token healing needs the tokenizer, outside the compiled loop",
    "watermarking_config": "watermarking is not implemented",
    **{name: _ASSISTED for name in (
        "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
        "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
        "target_lookbehind", "is_assistant", "speculation_type", "use_mtp", "assistant_ensemble_weight")},
}

_CALLABLE = ("runs Python code at every step, which the compiled decoding loop cannot call; use the matching "
             "GenerationConfig field (eos_token_id, bad_words_ids, suppress_tokens, ...) instead")

#: ``generate`` arguments of transformers that are not config fields and that we refuse, with the reason.
REFUSED_ARGUMENTS = {
    "logits_processor": _CALLABLE,
    "stopping_criteria": _CALLABLE,
    "prefix_allowed_tokens_fn": _CALLABLE,
    "assistant_model": _ASSISTED,
    "assistant_tokenizer": _ASSISTED,
    "negative_prompt_ids": "classifier-free guidance is not implemented",
    "negative_prompt_attention_mask": "classifier-free guidance is not implemented",
    "synced_gpus": "this is transformers' DeepSpeed option; use keras.distribution",
    "custom_generate": "custom generate functions are transformers (PyTorch) code",
    "tokenizer": "only used by stop_strings, which are refused",
    "trust_remote_code": "custom generate functions are transformers (PyTorch) code",
}

#: Fields whose effect transformers limits to sampling (``do_sample=True``).
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
#: Fields that only shape the dict returned with ``return_dict_in_generate=True``.
OUTPUT_ONLY = ("output_scores", "output_logits")


def field_support(name: str) -> str:
    """``"implemented"``, ``"no-op"``, ``"refused"`` or ``"unknown"`` (a field this version has not placed).

    >>> field_support("top_p"), field_support("cache_implementation"), field_support("num_beam_groups")
    ('implemented', 'no-op', 'refused')
    """
    if name in IMPLEMENTED:
        return "implemented"
    if name in NO_OPS:
        return "no-op"
    return "refused" if name in REFUSED else "unknown"


#: values of refused fields that switch nothing on (transformers' own defaults add more: num_beam_groups=1, ...)
OFF_VALUES = {"output_attentions": False, "output_hidden_states": False, "low_memory": False,
              "token_healing": False, "is_assistant": False, "use_mtp": False, "guidance_scale": 1.0}


def set_fields(config: GenerationConfig) -> dict:
    """The fields of ``config`` that switch something on: not None, and neither a fresh ``GenerationConfig()``'s
    value nor the value transformers uses for an unset field (``num_beam_groups=1``, ``output_attentions=False``).

    >>> sorted(set_fields(GenerationConfig(num_beams=4, max_new_tokens=5, num_beam_groups=1)))
    ['max_new_tokens', 'num_beams']
    """
    fresh = GenerationConfig().to_dict()
    off = {**default_generation_params(), **OFF_VALUES}
    return {name: value for name, value in config.to_dict().items()
            if name not in ("transformers_version", "_from_model_config") and value is not None
            and value != fresh.get(name) and not (name in off and value == off[name])}


def check_generation_config(config: GenerationConfig) -> None:
    """Refuse a config that sets a field we do not implement; warn where transformers, too, ignores a field.

    Args:
        config: the resolved ``GenerationConfig`` of one ``generate`` call.

    Raises:
        ValueError: naming the first refused (or unknown) field that is set, and why.

    Example:
        >>> check_generation_config(GenerationConfig(num_beams=4, max_new_tokens=5))
        >>> check_generation_config(GenerationConfig(num_beams=4, num_beam_groups=2))
        Traceback (most recent call last):
        ValueError: num_beam_groups=2 is not supported: group (diverse) beam search was moved out of ...
    """
    fields = set_fields(config)
    for name, value in sorted(fields.items()):
        support = field_support(name)
        if support == "refused":
            raise ValueError(f"{name}={value!r} is not supported: {REFUSED[name]}")
        if support == "unknown":
            raise ValueError(f"{name}={value!r} is not supported: this GenerationConfig field is new to "
                             f"vanilla_transformer (not implemented)")
    _warn_ineffective(config, fields)


def _warn_ineffective(config: GenerationConfig, fields: dict) -> None:
    """transformers' warnings for fields that a call's mode ignores: sampling fields without ``do_sample``,
    output fields without ``return_dict_in_generate``."""
    if not config.do_sample:
        ignored = [name for name in SAMPLING_ONLY if name in fields]
        if ignored:
            warnings.warn(f"{', '.join(ignored)} only take effect with do_sample=True (as in transformers); "
                          f"this call does not sample", UserWarning, stacklevel=4)
    if not config.return_dict_in_generate:
        ignored = [name for name in OUTPUT_ONLY if getattr(config, name)]
        if ignored:
            warnings.warn(f"{', '.join(ignored)} only take effect with return_dict_in_generate=True (as in "
                          f"transformers)", UserWarning, stacklevel=4)


def check_arguments(kwargs: dict) -> None:
    """Refuse transformers ``generate`` arguments that are not ``GenerationConfig`` fields and that we do not run.

    Args:
        kwargs: the keyword arguments of a ``generate`` call.

    Raises:
        ValueError: naming the first refused argument given (not None), and why.

    Example:
        >>> check_arguments({"max_new_tokens": 3})
        >>> check_arguments({"stopping_criteria": [lambda ids, scores: True]})
        Traceback (most recent call last):
        ValueError: stopping_criteria is not supported: runs Python code at every step, ...
    """
    for name in sorted(set(kwargs) & set(REFUSED_ARGUMENTS)):
        value = kwargs[name]
        if value is not None and value is not False and not (isinstance(value, (list, tuple)) and not value):
            raise ValueError(f"{name} is not supported: {REFUSED_ARGUMENTS[name]}")
