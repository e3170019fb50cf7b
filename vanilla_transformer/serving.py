"""Deployment: a whole translator (encoder, decoding loop, key/value cache) as one TensorFlow graph.

- :func:`export_saved_model`: a SavedModel for TensorFlow Serving whose ``serving_default`` signature runs
  the decoding loop inside the graph: ``input_ids``/``attention_mask (batch, length)`` int32 in,
  ``sequences (batch * num_return_sequences, out_length)`` int32 and ``sequences_scores`` float32 out, the
  ids of ``model.generate``. One request per sentence batch, not one per token.
- :func:`export_litert`: a LiteRT (``.tflite``) greedy translator of fixed input shape for devices.

Both need ``KERAS_BACKEND=tensorflow`` (checkpoints are backend-free: load a model trained on JAX or PyTorch
in a TensorFlow process to export it). The loaded graphs need TensorFlow (or the LiteRT runtime) only, not
this package. The tokenizer runs outside the graph: it is a ``tokenizers`` BPE with Metaspace word
boundaries, which neither tensorflow-text (WordPiece, SentencePiece) nor KerasHub's byte-level
``BytePairTokenizer`` reproduces; its files are written beside the graph (``assets.extra/tokenizer``).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from .generation import (LENGTH_MULTIPLE, DecodingParams, batch_bucket, resolve_generation_config,
                         resolved_decoder_start_token_id, resolved_pad_token_id)
from .generation.contract import check_generation_config
from .generation.plan import check_positions_fit, make_plan
from .generation.programs import decoding_function
from .padding_and_random import bucket_length, fill_rows, pad_batch, padding_mask

SIGNATURE = "serving_default"
TOKENIZER_DIR = "assets.extra/tokenizer"


def _require_tensorflow(what: str):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"{what} writes a TensorFlow graph and needs KERAS_BACKEND=tensorflow (this process "
                           f"runs {keras.backend.backend()}); checkpoints are backend-free: save_pretrained here "
                           f"and export from a TensorFlow process")
    import tensorflow as tf

    return tf


def decoding_setup(model, generation_config=None, **generation_kwargs):
    """The :class:`~vanilla_transformer.generation.plan.DecodingPlan`, its parameters and the special ids an
    exported translator bakes in: ``model.generation_config`` updated with ``generation_config`` and the
    keyword arguments (``max_new_tokens``, ``num_beams``, ``length_penalty``, ...), as ``generate`` reads them.

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM`.
        generation_config: a ``transformers.GenerationConfig`` or None.
        **generation_kwargs: ``GenerationConfig`` fields.

    Returns:
        ``(plan, params, pad_token_id, decoder_start_token_id)``.

    Raises:
        ValueError: the model is not an encoder-decoder, the settings sample (sampling is not exported), or they
            set a field that ``generate`` refuses (see :mod:`vanilla_transformer.generation.contract`).

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> plan, params, pad, start = decoding_setup(model, max_new_tokens=5, num_beams=2)
        >>> plan.mode, plan.num_beams, int(params.max_new_tokens), pad, start
        ('beam', 2, 5, 0, 1)
    """
    if not getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "decoding_context"):
        raise ValueError(f"only encoder-decoder translators are exported; {type(model).__name__} is not one")
    config = resolve_generation_config(model, generation_config, generation_kwargs)
    check_generation_config(config)  # a refused field fails the export as it fails generate
    plan, params = make_plan(config, prompt_length=1, use_cache=True,
                             room=model.config.max_position_embeddings - 1)
    if plan.do_sample:
        raise ValueError("do_sample=True: only greedy and beam search are exported (their ids are deterministic)")
    check_positions_fit(1, int(params.max_new_tokens), model.config.max_position_embeddings,
                        prefix="the decoder start token")
    pad = resolved_pad_token_id(model, config)
    return plan, params, 0 if pad is None else int(pad), int(resolved_decoder_start_token_id(model, config))


def _decoder_from_start(tf, model, plan, params, start: int):
    """``decode(source_ids, source_mask, active) -> (sequences, scores, length)``: the plan's decoding loop with
    every decoder starting from ``start`` (the rows come from ``source_ids``' static shape; seed 0, which greedy
    and beam search do not read)."""
    run = decoding_function(model, plan)
    params = DecodingParams(*(tf.constant(value) for value in params))

    def decode(source_ids, source_mask, active):
        prefix = tf.fill((source_ids.shape[0], 1), tf.constant(start, tf.int32))
        return run(source_ids, source_mask, prefix, tf.ones_like(prefix), tf.zeros_like(prefix),
                   tf.constant(0, tf.int32), params, active)[:3]  # the plan records nothing per step

    return decode


def serving_function(model, plan, params, pad: int, start: int, max_batch_size: int = 32):
    """The ``serving_default`` function: ``(input_ids, attention_mask) -> {"sequences", "sequences_scores"}``.

    Mirrors ``generate``: the source is padded to a multiple of 8 positions and the batch is filled to a
    bucket (:func:`~vanilla_transformer.generation.batch_bucket`), each bucket one XLA program, so the ids
    equal ``model.generate``'s. Only the taken bucket runs (and is compiled, on first use of a shape).

    Args:
        model: the translator (TensorFlow backend).
        plan / params: from :func:`decoding_setup`.
        pad / start: the pad and decoder start ids.
        max_batch_size: the largest batch a request may carry.

    Returns:
        A ``tf.function`` with the input signature ``(None, None)`` int32 twice.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config).build_weights()
        >>> serve = serving_function(model, *decoding_setup(model, max_new_tokens=4), max_batch_size=4)
        >>> ids = np.array([[5, 6, 2], [7, 2, 0]], "int32")
        >>> out = serve(ids, (ids != 0).astype("int32"))
        >>> bool((out["sequences"].numpy() == model.generate(ids, max_new_tokens=4)).all())
        True
    """
    import tensorflow as tf

    buckets = sorted({batch_bucket(rows) for rows in range(1, max_batch_size + 1)})
    decode = _decoder_from_start(tf, model, plan, params, start)
    # one XLA program per bucket (each traced with its own static batch)
    programs = [tf.function(decode, jit_compile=True) for _ in buckets]
    per_input = plan.num_return_sequences if plan.mode == "beam" else 1
    limit = model.config.max_position_embeddings

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32, name="input_ids"),
                                  tf.TensorSpec((None, None), tf.int32, name="attention_mask")])
    def serve(input_ids, attention_mask):
        batch, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        checks = [tf.debugging.assert_equal(tf.shape(attention_mask), tf.shape(input_ids),
                                            message="attention_mask and input_ids differ in shape"),
                  tf.debugging.assert_less_equal(batch, max_batch_size,
                                                 message=f"batch larger than max_batch_size={max_batch_size}"),
                  tf.debugging.assert_less_equal(length, limit,
                                                 message=f"input longer than max_position_embeddings={limit}")]
        with tf.control_dependencies(checks):
            width = (length + LENGTH_MULTIPLE - 1) // LENGTH_MULTIPLE * LENGTH_MULTIPLE
        ids = tf.pad(input_ids, [[0, 0], [0, width - length]], constant_values=pad)
        mask = tf.pad(attention_mask, [[0, 0], [0, width - length]])

        def branch(rows, program):
            sequences, scores, used = program(fill_rows(ids, rows), fill_rows(mask, rows),
                                              tf.range(rows) < batch)
            return sequences[: batch * per_input, :used], scores[: batch * per_input]

        index = tf.searchsorted(tf.constant(buckets, tf.int32), tf.reshape(batch, (1,)))[0]
        sequences, scores = tf.switch_case(index, [lambda r=r, p=p: branch(r, p) for r, p in zip(buckets, programs)])
        return {"sequences": sequences, "sequences_scores": scores}

    return serve


def export_saved_model(model, path, tokenizer=None, *, max_batch_size: int = 32, generation_config=None,
                       **generation_kwargs) -> Path:
    """Write ``model`` with its decoding loop as a TensorFlow SavedModel for TensorFlow Serving.

    The ``serving_default`` signature takes ``input_ids`` and ``attention_mask`` (int32, ``(batch,
    length)``, any batch up to ``max_batch_size``, any length up to ``max_position_embeddings``) and returns
    ``sequences`` (int32, rows as ``model.generate``: decoder start id, new tokens, pad after eos) and
    ``sequences_scores`` (float32). Decoding settings are ``model.generation_config`` updated with
    ``generation_config`` and the keyword arguments, fixed at export (``max_new_tokens``, ``num_beams``, ...).

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM` (TensorFlow backend).
        path: the SavedModel directory to write.
        tokenizer: optional; saved under ``assets.extra/tokenizer`` for clients (tokenization stays outside
            the graph, see the module's docstring).
        max_batch_size: the largest batch one request may carry.
        generation_config / **generation_kwargs: decoding settings, as for ``generate``.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile, tensorflow as tf
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> path = export_saved_model(model, tempfile.mkdtemp() + "/translator", max_batch_size=2,
        ...                           max_new_tokens=4, num_beams=2)
        >>> serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        >>> ids = np.array([[5, 6, 2]], "int32")
        >>> out = serve(input_ids=tf.constant(ids), attention_mask=tf.constant(np.ones_like(ids)))
        >>> bool((out["sequences"].numpy() == model.generate(ids, max_new_tokens=4, num_beams=2)).all())
        True
    """
    _require_tensorflow("export_saved_model")
    model.build_weights()
    plan, params, pad, start = decoding_setup(model, generation_config, **generation_kwargs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving_function(model, plan, params, pad, start, max_batch_size))
    path = Path(path)
    archive.write_out(str(path), verbose=False)
    if tokenizer is not None:
        tokenizer.save_pretrained(path / TOKENIZER_DIR)
    return path


def litert_function(model, plan, params, start: int, source_length: int):
    """The greedy translator of one sentence padded to ``source_length``: ``(input_ids, attention_mask)`` of
    shape ``(1, source_length)`` to ``{"sequences" (1, 1 + max_new_tokens), "length" (1,)}``: ids are
    ``sequences[0, :length]``, the rest is padding.

    Args:
        model: the translator (TensorFlow backend).
        plan / params: from :func:`decoding_setup` (greedy).
        start: the decoder start id.
        source_length: the fixed source length (a multiple of 8; pad shorter sources, with mask 0).

    Returns:
        A ``tf.function`` with a fixed input signature (no XLA: LiteRT converts plain TensorFlow ops).

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config).build_weights()
        >>> plan, params, _, start = decoding_setup(model, max_new_tokens=4)
        >>> out = litert_function(model, plan, params, start, 8)(np.array([[5, 6, 2, 0, 0, 0, 0, 0]], "int32"),
        ...                                                     np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"))
        >>> ids = out["sequences"].numpy()[0, : int(out["length"][0])]
        >>> ids.tolist() == model.generate(np.array([[5, 6, 2]]), max_new_tokens=4)[0].tolist()
        True
    """
    import tensorflow as tf

    if plan.mode != "greedy":
        raise ValueError(f"the LiteRT translator decodes greedily; got {plan.mode} (num_beams={plan.num_beams})")
    decode = _decoder_from_start(tf, model, plan, params, start)
    spec = tf.TensorSpec((1, source_length), tf.int32)

    @tf.function(input_signature=[spec, spec])
    def translate(input_ids, attention_mask):
        sequences, _, length = decode(input_ids, attention_mask, tf.ones((1,), tf.bool))
        return {"sequences": sequences[:, : 1 + plan.max_new_tokens], "length": tf.reshape(length, (1,))}

    return translate


def export_litert(model, path, *, source_length: int = 64, generation_config=None, **generation_kwargs) -> Path:
    """Write a greedy translator as a LiteRT flatbuffer (``.tflite``) for on-device inference.

    The graph takes ``input_ids`` and ``attention_mask`` of fixed shape ``(1, source_length)`` (pad the
    sentence with the pad id and mask 0) and returns ``sequences (1, 1 + capacity)`` and ``length (1,)``:
    the ids of ``model.generate`` are ``sequences[0, :length]``. Only LiteRT built-in ops are used (no
    TensorFlow fallback), so the plain ``ai-edge-litert`` interpreter runs it.

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM` (TensorFlow backend).
        path: the ``.tflite`` file to write.
        source_length: the fixed source length, rounded up to a multiple of 8, at most
            ``max_position_embeddings``.
        generation_config / **generation_kwargs: decoding settings (greedy: ``num_beams`` must be 1).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile
        >>> from ai_edge_litert.interpreter import Interpreter
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> path = export_litert(model, tempfile.mkdtemp() + "/translator.tflite", source_length=8,
        ...                      max_new_tokens=4)
        >>> translate = Interpreter(model_path=str(path)).get_signature_runner()
        >>> out = translate(input_ids=np.array([[5, 6, 2, 0, 0, 0, 0, 0]], "int32"),
        ...                 attention_mask=np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"))
        >>> out["sequences"][0, : out["length"][0]].tolist() == model.generate(np.array([[5, 6, 2]]),
        ...                                                                     max_new_tokens=4)[0].tolist()
        True
    """
    tf = _require_tensorflow("export_litert")
    source_length = bucket_length(source_length, LENGTH_MULTIPLE)
    if source_length > model.config.max_position_embeddings:
        raise ValueError(f"source_length={source_length} exceeds max_position_embeddings="
                         f"{model.config.max_position_embeddings}")
    model.build_weights()
    plan, params, _, start = decoding_setup(model, generation_config, **generation_kwargs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, litert_function(model, plan, params, start, source_length))
    with tempfile.TemporaryDirectory() as scratch:
        # From a SavedModel, whose loader freezes the weights: converting the live function keeps the
        # embedding table as a resource variable that LiteRT never initialises.
        archive.write_out(scratch, verbose=False)
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(scratch).convert()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def pad_source(ids, source_length: int, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One sentence's ids as the LiteRT translator's inputs: ``(input_ids, attention_mask)`` of shape
    ``(1, source_length)``.

    >>> pad_source([5, 6, 2], 8)[1].tolist()
    [[1, 1, 1, 0, 0, 0, 0, 0]]
    """
    ids = list(ids)
    if len(ids) > source_length:
        raise ValueError(f"{len(ids)} source tokens do not fit the translator's source_length={source_length}")
    return pad_batch([ids], pad, source_length), padding_mask([len(ids)], source_length)


EXPORT_FORMATS = ("saved_model", "litert", "transformers", "ctranslate2")  # "transformers": deprecated
TRANSFORMERS_EXPORT_DEPRECATION = (
    "export(to='transformers') is deprecated: a transformers checkpoint is written by "
    "model.save_pretrained(path, format='transformers') or vanilla_transformer.export_to_transformers "
    "(command line: vanilla-transformer convert MODEL OUT --to transformers)")


def export(model, path, to: str = "saved_model", tokenizer=None, **settings) -> Path:
    """Export a translator for deployment: ``to="saved_model"`` (TensorFlow Serving, decoding inside the
    graph; :func:`export_saved_model`), ``"litert"`` (on-device greedy translator; :func:`export_litert`) or
    ``"ctranslate2"`` (a CTranslate2 model directory;
    :func:`~vanilla_transformer.convert.ctranslate2.export_to_ctranslate2`).

    ``to="transformers"`` is deprecated (a ``FutureWarning``): a transformers checkpoint is not a serving
    format; write it with ``model.save_pretrained(path, format="transformers")`` or
    :func:`~vanilla_transformer.convert.export_to_transformers` (what it still calls).

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM`.
        path: the SavedModel directory, ``.tflite`` file or checkpoint directory to write.
        to: one of ``EXPORT_FORMATS``.
        tokenizer: written with the export (``assets.extra/tokenizer`` of a SavedModel, beside a ``.tflite``
            file as ``tokenizer/``, into the transformers checkpoint or CTranslate2 directory); optional except
            for ``"ctranslate2"``.
        **settings: decoding settings (``max_new_tokens``, ``num_beams``, ...) and the format's own options
            (``max_batch_size``, ``source_length``; ``quantization`` for CTranslate2); the transformers
            checkpoint takes none (its ``generation_config.json`` is the model's), CTranslate2 only
            ``quantization`` (it takes decoding settings at translate time).

    Returns:
        The written path.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> sorted(os.listdir(export(model, tempfile.mkdtemp() + "/translator", to="saved_model", max_new_tokens=4)))
        ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables']
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     folder = export(model, tempfile.mkdtemp() + "/marian", to="transformers")  # deprecated
        >>> caught[0].category.__name__, "save_pretrained(path, format='transformers')" in str(caught[0].message)
        ('FutureWarning', True)
        >>> sorted(os.listdir(folder))
        ['config.json', 'generation_config.json', 'model.safetensors']
        >>> export(model, tempfile.mkdtemp(), to="onnx")
        Traceback (most recent call last):
        ...
        ValueError: unknown export format 'onnx'; choose one of ('saved_model', 'litert', 'transformers',
        'ctranslate2')
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of {EXPORT_FORMATS}")
    if to == "saved_model":
        return export_saved_model(model, path, tokenizer, **settings)
    if to == "litert":
        path = export_litert(model, path, **settings)
        if tokenizer is not None:
            tokenizer.save_pretrained(path.parent / "tokenizer")
        return path
    if to == "ctranslate2":
        if set(settings) - {"quantization"}:
            raise ValueError(f"the ctranslate2 export takes no decoding settings (got "
                             f"{sorted(set(settings) - {'quantization'})}); "
                             f"CTranslate2 takes them at translate time (translate_batch(beam_size=...))")
        from .convert.ctranslate2 import export_to_ctranslate2

        return export_to_ctranslate2(model, path, tokenizer, **settings)
    warnings.warn(TRANSFORMERS_EXPORT_DEPRECATION, FutureWarning, stacklevel=2)
    if settings:
        raise ValueError(f"the transformers export takes no decoding settings (got {sorted(settings)}); "
                         f"set model.generation_config, which it writes as generation_config.json")
    from .convert import export_to_transformers

    return export_to_transformers(model, path, tokenizer)
