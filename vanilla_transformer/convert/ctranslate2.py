"""CTranslate2 as a deploy target: our encoder-decoder as a CTranslate2 model that translates as ``generate`` does.

:func:`export_to_ctranslate2` writes the model as a transformers ``MarianMTModel`` checkpoint in a temporary
directory (:func:`~vanilla_transformer.convert.export_to_transformers`), then converts it with CTranslate2's
Marian loader, adapted to our vocabulary conventions
(:func:`~vanilla_transformer.compat.convert_marian_with_ctranslate2`): every vocabulary row is kept (OPUS-MT's
loader drops the last one, its ``<pad>``) and the decoder starts from the embedding of our
``decoder_start_token_id`` (OPUS-MT's starts from a zero vector). The tokenizer is saved beside the model.

CTranslate2 takes token strings and its decoding settings at translate time. :func:`ctranslate2_options` maps
``generate``'s settings to ``translate_batch``'s so both decode alike (float32: the same ids);
:func:`ctranslate2_generate` (ids) and :func:`ctranslate2_translate` (strings) use it. ``ctranslate2``
(``pip install ctranslate2``, 4.x) is imported only when a function needs it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

FILLER = "<unused_{}>"


def ctranslate2_vocabulary(tokenizer, vocab_size: int) -> list[str]:
    """The model's vocabulary as CTranslate2 stores it: one token string per row of the embedding, in id order.

    Rows the tokenizer has no token for (a model built with a larger ``vocab_size``) get ``<unused_ID>``.

    Args:
        tokenizer: the model's tokenizer (``get_vocab()``: token -> id).
        vocab_size: the model's ``config.vocab_size``.

    Returns:
        ``vocab_size`` distinct strings; entry ``i`` is the token of id ``i``.

    Raises:
        ValueError: the tokenizer has ids at or past ``vocab_size``, or a filler name is one of its tokens.

    Example:
        >>> from vanilla_transformer import train_bpe_tokenizer
        >>> tokenizer = train_bpe_tokenizer(["a man rides a bike", "ein Mann fährt Rad"] * 5, vocab_size=30)
        >>> vocabulary = ctranslate2_vocabulary(tokenizer, len(tokenizer) + 2)
        >>> vocabulary[:5], vocabulary[-2:]
        (['<pad>', '<s>', '</s>', '<unk>', '<mask>'], ['<unused_30>', '<unused_31>'])
        >>> ctranslate2_vocabulary(tokenizer, 10)
        Traceback (most recent call last):
        ...
        ValueError: vocab_size=10: the tokenizer has ids up to 29; a CTranslate2 model needs a token for every id
    """
    tokens = tokenizer.get_vocab()
    largest = max(tokens.values())
    if largest >= vocab_size:
        raise ValueError(f"vocab_size={vocab_size}: the tokenizer has ids up to {largest}; a CTranslate2 model needs "
                         f"a token for every id")
    vocabulary = [None] * vocab_size
    for token, index in tokens.items():
        vocabulary[index] = token
    for index, token in enumerate(vocabulary):
        if token is None:
            if FILLER.format(index) in tokens:
                raise ValueError(f"the tokenizer has a token {FILLER.format(index)!r}, the name of an unused row")
            vocabulary[index] = FILLER.format(index)
    return vocabulary


def _one_id(name: str, value):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{name}={list(value)}: a CTranslate2 model has one end token")
        value = value[0]
    return value


def ctranslate2_special_tokens(model, vocabulary: list[str], tokenizer=None) -> dict:
    """The CTranslate2 config fields naming the model's special tokens.

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM`; its generation config's
            ``eos_token_id`` and ``decoder_start_token_id`` (falling back to the model config's) are used.
        vocabulary: from :func:`ctranslate2_vocabulary`.
        tokenizer: optional; its ``unk_token`` is named when it is in ``vocabulary``.

    Returns:
        ``{"decoder_start_token", "eos_token", "bos_token", "unk_token"}`` (those that are set) as token strings.

    Raises:
        ValueError: no ``decoder_start_token_id``, several eos ids, or an id outside ``vocabulary``.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=8, d_model=8, num_heads=2, d_ff=16))
        >>> ctranslate2_special_tokens(model, ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c", "d"])
        {'decoder_start_token': '<s>', 'eos_token': '</s>', 'bos_token': '<s>'}
    """
    generation, config = model.generation_config, model.config
    ids = {"decoder_start_token": generation.decoder_start_token_id,
           "eos_token": _one_id("eos_token_id", generation.eos_token_id),
           "bos_token": config.bos_token_id}
    ids["decoder_start_token"] = (config.decoder_start_token_id if ids["decoder_start_token"] is None
                                  else ids["decoder_start_token"])
    ids["eos_token"] = _one_id("eos_token_id", config.eos_token_id) if ids["eos_token"] is None else ids["eos_token"]
    if ids["decoder_start_token"] is None:
        raise ValueError("decoder_start_token_id is None: a CTranslate2 model names the token its decoder starts from")
    tokens = {}
    for name, index in ids.items():
        if index is None:
            continue
        if not 0 <= int(index) < len(vocabulary):
            raise ValueError(f"{name}_id={index} is outside the vocabulary of {len(vocabulary)} tokens")
        tokens[name] = vocabulary[int(index)]
    if tokenizer is not None and getattr(tokenizer, "unk_token", None) in vocabulary:
        tokens["unk_token"] = tokenizer.unk_token
    return tokens


def quantization_types() -> tuple[str, ...]:
    """The weight types CTranslate2's converter accepts (``int8``, ``int8_float32``, ``float16``, ...).

    Returns:
        ``ctranslate2.specs.model_spec.ACCEPTED_MODEL_TYPES`` of the installed CTranslate2.

    Example:
        >>> import pytest; _ = pytest.importorskip("ctranslate2")  # skipped where CTranslate2 is not installed
        >>> "int8" in quantization_types(), "float32" in quantization_types()
        (True, True)
    """
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES

    return tuple(ACCEPTED_MODEL_TYPES)


def export_to_ctranslate2(model, path, tokenizer, *, quantization: str | None = None) -> Path:
    """Write ``model`` as a CTranslate2 model directory (``ctranslate2.Translator(path)`` loads it).

    The directory holds CTranslate2's ``model.bin``, ``config.json`` and ``shared_vocabulary.json`` (every id of
    the model, in order) and the tokenizer's files. In float32, ``translate_batch`` with
    :func:`ctranslate2_options` gives the ids of ``model.generate`` (see :func:`ctranslate2_generate`).

    Args:
        model: a :class:`~vanilla_transformer.TransformerForSeq2SeqLM` that exports to ``MarianMTModel``
            (post-LN, sinusoidal positions; see :func:`~vanilla_transformer.convert.export_to_transformers`).
        path: the directory to write (replaced if it exists).
        tokenizer: the model's tokenizer: CTranslate2 models carry their vocabulary as token strings.
        quantization: a weight type of :func:`quantization_types` (``"int8"``: 8-bit weights, ~4x smaller
            and faster on CPUs, ids no longer exactly ours), or None: float32.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: no tokenizer, an unknown ``quantization``, or special tokens CTranslate2 cannot name.
        UnsupportedConfigError: what ``MarianMTModel`` cannot represent.

    Example:
        >>> import json, tempfile, pytest
        >>> ctranslate2 = pytest.importorskip("ctranslate2")  # skipped where CTranslate2 is not installed
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, train_bpe_tokenizer
        >>> tokenizer = train_bpe_tokenizer(["a man rides a bike", "ein Mann fährt Rad"] * 5, vocab_size=40)
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(
        ...     vocab_size=len(tokenizer), d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...     num_decoder_layers=1, max_position_embeddings=32))
        >>> path = export_to_ctranslate2(model, tempfile.mkdtemp() + "/ct2", tokenizer)
        >>> sorted(p.name for p in path.iterdir())
        ['config.json', 'model.bin', 'shared_vocabulary.json', 'tokenizer.json', 'tokenizer_config.json']
        >>> json.loads((path / "config.json").read_text())["decoder_start_token"]  # ours, not OPUS-MT's </s>
        '<s>'
        >>> export_to_ctranslate2(model, tempfile.mkdtemp(), tokenizer, quantization="int4")
        Traceback (most recent call last):
        ...
        ValueError: quantization='int4': CTranslate2's converter takes one of ('int8', ...) (or None: float32)
    """
    from . import export_to_transformers
    from ..compat import convert_marian_with_ctranslate2

    if tokenizer is None:
        raise ValueError("tokenizer=None: a CTranslate2 model carries its vocabulary as token strings; pass the "
                         "model's tokenizer")
    if quantization is not None and quantization not in quantization_types():
        raise ValueError(f"quantization={quantization!r}: CTranslate2's converter takes one of "
                         f"{quantization_types()} (or None: float32)")
    model.build_weights()
    vocabulary = ctranslate2_vocabulary(tokenizer, model.config.vocab_size)
    special_tokens = ctranslate2_special_tokens(model, vocabulary, tokenizer)
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        export_to_transformers(model, scratch)
        convert_marian_with_ctranslate2(scratch, path, vocabulary, special_tokens, quantization)
    tokenizer.save_pretrained(path)
    return path


def ctranslate2_options(num_beams: int = 1, max_new_tokens: int = 256, min_new_tokens: int = 0,
                        length_penalty: float = 1.0, early_stopping=None) -> dict:
    """``translate_batch`` keyword arguments that decode as ``generate(**these settings)`` does.

    - ``max_decoding_length``/``min_decoding_length``: new tokens, the end token included, as ours (CTranslate2's
      minimum defaults to 1, ours to 0).
    - ``return_end_token=True``: CTranslate2 divides a hypothesis' score by its length ** ``length_penalty``,
      counting the end token only when it is returned; ours (and transformers') count it.
    - Beam search: CTranslate2 stops once ``num_beams`` hypotheses have ended, transformers'
      ``early_stopping=True``, the one rule both have (with ``length_penalty=0`` it stops when the best beam ends).
    - ``max_input_length=0``: no truncation of sources (ours has none).

    Args:
        num_beams / max_new_tokens / min_new_tokens / length_penalty / early_stopping: ``generate``'s settings.

    Returns:
        A dict for ``ctranslate2.Translator.translate_batch``.

    Raises:
        ValueError: a beam search setting CTranslate2 decodes otherwise (``early_stopping`` other than True,
            ``length_penalty=0``).

    Example:
        >>> ctranslate2_options(num_beams=4, max_new_tokens=24, early_stopping=True)["beam_size"]
        4
        >>> ctranslate2_options(num_beams=4)
        Traceback (most recent call last):
        ...
        ValueError: early_stopping=None: CTranslate2's beam search stops once num_beams hypotheses have ended, as ...
    """
    if num_beams > 1 and early_stopping is not True:
        raise ValueError(f"early_stopping={early_stopping!r}: CTranslate2's beam search stops once num_beams "
                         f"hypotheses have ended, as generate(early_stopping=True) does; pass early_stopping=True")
    if num_beams > 1 and length_penalty == 0:
        raise ValueError("length_penalty=0: CTranslate2's beam search then stops when its best beam ends, which "
                         "generate does not; use a non-zero length_penalty")
    return dict(beam_size=num_beams, max_decoding_length=max_new_tokens, min_decoding_length=min_new_tokens,
                length_penalty=length_penalty, return_end_token=True, max_input_length=0, num_hypotheses=1)


def ctranslate2_generate(translator, vocabulary: list[str], source_ids, decoder_start_token_id: int,
                         **generation_kwargs) -> list[list[int]]:
    """Translate id sequences with a CTranslate2 translator, returning rows as ``generate`` does.

    Args:
        translator: a ``ctranslate2.Translator`` of an :func:`export_to_ctranslate2` directory.
        vocabulary: its vocabulary (:func:`ctranslate2_vocabulary`, or ``shared_vocabulary.json``).
        source_ids: sources as lists of ids without padding (the tokenizer's ``input_ids``, end token included).
        decoder_start_token_id: the id every returned row starts with, as ``generate``'s do.
        **generation_kwargs: ``generate``'s settings, mapped by :func:`ctranslate2_options`.

    Returns:
        One list of ids per source: the decoder start id, the new tokens, the end token (when it ended), without
        ``generate``'s padding.

    Example:
        >>> import tempfile, pytest
        >>> ctranslate2 = pytest.importorskip("ctranslate2")  # skipped where CTranslate2 is not installed
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, train_bpe_tokenizer
        >>> tokenizer = train_bpe_tokenizer(["a man rides a bike", "ein Mann fährt Rad"] * 5, vocab_size=40)
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(
        ...     vocab_size=len(tokenizer), d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...     num_decoder_layers=1, max_position_embeddings=32))
        >>> path = export_to_ctranslate2(model, tempfile.mkdtemp() + "/ct2", tokenizer)
        >>> ids = tokenizer(["a man rides"])["input_ids"]
        >>> rows = ctranslate2_generate(ctranslate2.Translator(str(path)),
        ...                             ctranslate2_vocabulary(tokenizer, model.config.vocab_size), ids,
        ...                             model.config.decoder_start_token_id, max_new_tokens=5)
        >>> ours = model.generate(np.array(ids), max_new_tokens=5)[0].tolist()
        >>> rows[0] == ours[: len(rows[0])] and all(i == 0 for i in ours[len(rows[0]):])  # ours pads after eos
        True
    """
    index = {token: i for i, token in enumerate(vocabulary)}
    sources = [[vocabulary[int(i)] for i in row] for row in source_ids]
    results = translator.translate_batch(sources, **ctranslate2_options(**generation_kwargs))
    return [[int(decoder_start_token_id)] + [index[token] for token in result.hypotheses[0]] for result in results]


def ctranslate2_translate(translator, tokenizer, texts, max_source_tokens: int | None = None,
                          **generation_kwargs) -> list[str]:
    """Translate strings with a CTranslate2 translator as ``model.translate(texts, tokenizer, ...)`` does.

    Args:
        translator: a ``ctranslate2.Translator`` of an :func:`export_to_ctranslate2` directory.
        tokenizer: the model's tokenizer (the one saved in that directory).
        texts: a list of strings.
        max_source_tokens: cut longer sources as the tokenizer truncates (its end token kept), as
            ``model.translate`` cuts them at the model's ``max_position_embeddings``; None: no cut (CTranslate2
            then refuses a source longer than the model's positions).
        **generation_kwargs: ``generate``'s settings, mapped by :func:`ctranslate2_options`.

    Returns:
        One string per text, decoded without special tokens.

    Example:
        >>> import tempfile, pytest
        >>> ctranslate2 = pytest.importorskip("ctranslate2")  # skipped where CTranslate2 is not installed
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, train_bpe_tokenizer
        >>> tokenizer = train_bpe_tokenizer(["a man rides a bike", "ein Mann fährt Rad"] * 5, vocab_size=40)
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(
        ...     vocab_size=len(tokenizer), d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...     num_decoder_layers=1, max_position_embeddings=32))
        >>> translator = ctranslate2.Translator(str(export_to_ctranslate2(model, tempfile.mkdtemp(), tokenizer)))
        >>> texts = ["a man rides", "ein Mann"]
        >>> settings = dict(num_beams=2, early_stopping=True, max_new_tokens=4)
        >>> ctranslate2_translate(translator, tokenizer, texts, **settings) == model.translate(texts, tokenizer,
        ...                                                                                   **settings)
        True
    """
    encoded = tokenizer(list(texts), truncation=max_source_tokens is not None, max_length=max_source_tokens)
    sources = [tokenizer.convert_ids_to_tokens(ids) for ids in encoded["input_ids"]]
    results = translator.translate_batch(sources, **ctranslate2_options(**generation_kwargs))
    ids = [tokenizer.convert_tokens_to_ids(result.hypotheses[0]) for result in results]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)
