"""The only place that touches other libraries' private APIs, each where no public API does the job.

Every entry names the library version it was written against; ``tests/test_compat.py`` checks each one
against the installed version and fails with a message naming the entry when it changes, instead of the
package going silently wrong after an upgrade.

- :class:`TrainerBuildHook`: Keras' ``Trainer._maybe_symbolic_build`` / ``_symbolic_build`` (keras 3.15.1);
- :func:`default_generation_params`: ``GenerationConfig._get_default_generation_params`` (transformers 5.24.0);
- :func:`mark_generation_config_explicit`: ``GenerationConfig._from_model_config`` (transformers 5.24.0);
- :func:`omit_frequent_tracing_warning`: ``tf.function``'s ``_omit_frequent_tracing_warning`` (tensorflow 2.21.0);
- :func:`convert_marian_with_ctranslate2`: CTranslate2's ``MarianMTLoader`` (its ``_remove_pad_weights``,
  ``set_decoder``, ``set_config``, ``get_vocabulary``) and ``Converter._load`` (ctranslate2 4.8.5);
- :func:`keras_data_adapter`, :func:`train_validation_split`, :func:`adapter_with_tf_dataset`: Keras'
  ``data_adapters.get_data_adapter``, ``DataAdapter`` and ``array_slicing.train_validation_split`` (keras 3.15.1).
"""

from __future__ import annotations

WRITTEN_AGAINST = {"keras": "3.15.1", "transformers": "5.24.0", "tensorflow": "2.21.0", "ctranslate2": "4.8.5"}


def _changed(library: str, name: str) -> str:
    import importlib

    installed = importlib.import_module(library).__version__
    return (f"{library} {installed} no longer has {name}, which vanilla_transformer.compat was written against "
            f"({library} {WRITTEN_AGAINST[library]}); update vanilla_transformer/compat.py")


class TrainerBuildHook:
    """Mixin letting a ``keras.Model`` replace the batch Keras builds it from before the first training step.

    Keras' TensorFlow trainer calls the private ``_maybe_symbolic_build(iterator, data_batch)``, which takes
    the first batch of the epoch iterator and passes it to ``_symbolic_build(data_batch=...)``. A subclass
    returns the batch to build from in :meth:`batch_for_symbolic_build`, or None to keep Keras' behaviour.

    Put it before ``keras.Model`` in the bases. Keras' own build runs unless :meth:`replaces_symbolic_build`
    returns True; our models use it through
    :class:`~vanilla_transformer.distribution.MultiWorkerTrainerFixes`, which does so only under
    multi-worker training.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.compat import TrainerBuildHook
        >>> issubclass(TransformerForSeq2SeqLM, TrainerBuildHook)
        True
        >>> TransformerForSeq2SeqLM(example_config).replaces_symbolic_build()  # one device: Keras builds as usual
        False
    """

    def batch_for_symbolic_build(self, first_batch):
        """The batch to build from instead of ``first_batch`` (None: Keras' own build).

        Args:
            first_batch: the first batch of the epoch iterator, as Keras would build from it (a structure of
                tensors, possibly ``tf.distribute.DistributedValues``).

        Returns:
            A batch of the same structure to pass to ``_symbolic_build``, or None to use ``first_batch``.
        """
        return None

    def replaces_symbolic_build(self) -> bool:
        """Whether :meth:`batch_for_symbolic_build` may replace the batch (checked before reading any).

        Returns:
            False here (Keras' own build, untouched); subclasses return True where they need the hook.
        """
        return False

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not hasattr(super(), "_maybe_symbolic_build") or not hasattr(self, "_symbolic_build"):
            raise RuntimeError(_changed("keras", "Trainer._maybe_symbolic_build / _symbolic_build"))
        if iterator is None or not self.replaces_symbolic_build():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:  # what Keras does: the first batch of the epoch iterator
            data_batch = next(batches)
            break
        replacement = self.batch_for_symbolic_build(data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch if replacement is None else replacement)


def default_generation_params() -> dict:
    """transformers' values for ``GenerationConfig`` fields left unset (None), e.g. ``num_beams`` -> 1.

    >>> default_generation_params()["num_beams"]
    1
    """
    from transformers import GenerationConfig

    if not hasattr(GenerationConfig, "_get_default_generation_params"):
        raise RuntimeError(_changed("transformers", "GenerationConfig._get_default_generation_params"))
    return dict(GenerationConfig._get_default_generation_params())


def mark_generation_config_explicit(generation_config) -> None:
    """Mark a ``GenerationConfig`` derived from a model config as the user's own, so that transformers saves
    and applies it as given rather than re-deriving it from the model config.

    Args:
        generation_config: a ``transformers.GenerationConfig``; changed in place (its private
            ``_from_model_config`` flag is cleared).

    Returns:
        None.

    Example:
        >>> from transformers import BertConfig, GenerationConfig
        >>> from vanilla_transformer.compat import mark_generation_config_explicit
        >>> generation_config = GenerationConfig.from_model_config(BertConfig(vocab_size=20, pad_token_id=0))
        >>> generation_config._from_model_config, generation_config.pad_token_id
        (True, 0)
        >>> mark_generation_config_explicit(generation_config)
        >>> generation_config._from_model_config
        False
    """
    generation_config._from_model_config = False


def omit_frequent_tracing_warning(function) -> None:
    """Keep TensorFlow from warning that ``function`` (a ``tf.function``) "triggered tf.function retracing".

    TensorFlow counts traces per Python code object, not per ``tf.function``: the compiled decoding programs
    (one ``tf.function`` each, built from one code object, each traced once by design) add up to its warning
    about excessive retracing after five of them, and the advice it prints does not apply. Keras' own
    functions avoid it with ``reduce_retracing=True``, which would give XLA dynamic shapes here. Sets the
    private flag TensorFlow's frequent-tracing detector reads; does nothing where the attribute is gone
    (``tests/test_compat.py`` fails then).

    Args:
        function: the object ``tf.function`` returned; changed in place.

    Returns:
        None.

    Example:
        >>> import tensorflow as tf
        >>> from vanilla_transformer.compat import omit_frequent_tracing_warning
        >>> program = tf.function(lambda x: x + 1)
        >>> omit_frequent_tracing_warning(program)
        >>> program._omit_frequent_tracing_warning
        True
    """
    if hasattr(function, "_omit_frequent_tracing_warning"):
        function._omit_frequent_tracing_warning = True


def _keep_vocabulary_marian_loader(vocabulary: list[str], special_tokens: dict):
    """CTranslate2's Marian loader without OPUS-MT's vocabulary conventions (see
    :func:`convert_marian_with_ctranslate2`)."""
    from ctranslate2.converters.transformers import MarianMTLoader

    for name in ("_remove_pad_weights", "set_decoder", "set_config", "get_vocabulary"):
        if not hasattr(MarianMTLoader, name):
            raise RuntimeError(_changed("ctranslate2", f"MarianMTLoader.{name}"))

    class KeepVocabularyMarianLoader(MarianMTLoader):
        def _remove_pad_weights(self, spec):
            pass  # OPUS-MT's extra last row (its <pad>) is a real token of ours: keep every row

        def set_decoder(self, spec, decoder):
            super().set_decoder(spec, decoder)
            spec.start_from_zero_embedding = False  # our decoder starts from the embedding of its start token

        def set_config(self, config, model, tokenizer):
            # MarianMTLoader's reads a transformers tokenizer and names </s> as the start token
            for name, token in special_tokens.items():  # eos, unk, bos and our decoder start token
                setattr(config, name, token)

        def get_vocabulary(self, model, tokenizer):
            return list(vocabulary)  # the whole vocabulary in id order (OPUS-MT's drops a trailing <pad>)

    return KeepVocabularyMarianLoader()


def convert_marian_with_ctranslate2(checkpoint, output_dir, vocabulary: list[str], special_tokens: dict,
                                    quantization: str | None = None) -> str:
    """Convert a ``MarianMTModel`` checkpoint with CTranslate2's Marian loader, told to keep the whole vocabulary
    and the decoder start token.

    CTranslate2's ``TransformersConverter`` picks its ``MarianMTLoader`` for every ``MarianConfig``. That loader
    assumes OPUS-MT's conventions: transformers appended ``<pad>`` as the last vocabulary entry, which it drops
    (the last row of the embeddings, output projection and bias, unconditionally), and the decoder starts from a
    zero vector (``start_from_zero_embedding``) with ``</s>`` named as start token. Our models put ``<pad>``
    first, every row is a real token, and the decoder starts from the embedding of ``decoder_start_token_id``
    (often ``<s>``, 1). A subclass of the loader undoes those three conventions; a ``Converter`` whose
    ``_load`` (the method CTranslate2's converters implement) runs it on the checkpoint in float32 then goes
    through CTranslate2's public ``convert`` (validation, quantization, saving). No public API takes a
    loader; ``tests/test_compat.py`` checks what this relies on.

    Args:
        checkpoint: a directory written by ``export_to_transformers`` (``MarianMTModel``).
        output_dir: the CTranslate2 model directory to write (replaced if it exists).
        vocabulary: every token string in id order, as many as the model's rows.
        special_tokens: CTranslate2 config fields to set: ``eos_token``, ``unk_token``, ``bos_token``,
            ``decoder_start_token`` (token strings of ``vocabulary``).
        quantization: CTranslate2's weight type (``"int8"``, ``"float16"``, ...), None for the checkpoint's.

    Returns:
        ``output_dir`` (a string, as CTranslate2 returns it).

    Raises:
        RuntimeError: the installed CTranslate2 no longer has what this relies on.

    Example:
        >>> import json, tempfile, pytest
        >>> _ = pytest.importorskip("ctranslate2")  # skipped where CTranslate2 is not installed
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, export_to_transformers
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=6, d_model=8, num_heads=2, d_ff=16,
        ...                                                   num_encoder_layers=1, num_decoder_layers=1))
        >>> checkpoint = export_to_transformers(model, tempfile.mkdtemp())
        >>> vocabulary = ["<pad>", "<s>", "</s>", "<unk>", "a", "b"]
        >>> output = convert_marian_with_ctranslate2(checkpoint, tempfile.mkdtemp() + "/ct2", vocabulary,
        ...                                          {"decoder_start_token": "<s>", "eos_token": "</s>"})
        >>> json.loads(open(output + "/shared_vocabulary.json").read())  # every row kept, <pad> first
        ['<pad>', '<s>', '</s>', '<unk>', 'a', 'b']
    """
    import torch
    import transformers
    from ctranslate2.converters.converter import Converter

    if not hasattr(Converter, "_load"):
        raise RuntimeError(_changed("ctranslate2", "Converter._load"))
    loader = _keep_vocabulary_marian_loader(vocabulary, special_tokens)

    class KeepVocabularyMarianConverter(Converter):
        def _load(self):
            with torch.no_grad():
                model = transformers.MarianMTModel.from_pretrained(str(checkpoint), dtype=torch.float32)
                return loader(model, None)

    return KeepVocabularyMarianConverter().convert(str(output_dir), quantization=quantization, force=True)


def keras_data_adapter(x, y=None, sample_weight=None, batch_size=None, steps_per_epoch=None, shuffle=False,
                       class_weight=None):
    """The data adapter Keras' ``fit`` / ``evaluate`` would build for these arguments (same checks, warnings).

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.compat import keras_data_adapter
        >>> keras_data_adapter(np.zeros((10, 3)), np.zeros(10), batch_size=4).num_batches
        3
    """
    try:
        from keras.src.trainers.data_adapters import get_data_adapter
    except ImportError:
        raise RuntimeError(_changed("keras", "keras.src.trainers.data_adapters.get_data_adapter")) from None
    return get_data_adapter(x, y=y, sample_weight=sample_weight, batch_size=batch_size,
                            steps_per_epoch=steps_per_epoch, shuffle=shuffle, class_weight=class_weight)


def train_validation_split(arrays: tuple, validation_split: float):
    """Keras' ``fit(validation_split=...)`` split: ``(train_arrays, validation_arrays)``, the last rows held out.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.compat import train_validation_split
        >>> (x, y, w), (vx, vy, vw) = train_validation_split((np.arange(10), np.arange(10), None), 0.2)
        >>> vx.tolist(), w, vw
        ([8, 9], None, None)
    """
    try:
        from keras.src.trainers.data_adapters.array_slicing import train_validation_split as split
    except ImportError:
        raise RuntimeError(_changed("keras", "keras.src.trainers.data_adapters.array_slicing")) from None
    return split(arrays, validation_split=validation_split)


def adapter_with_tf_dataset(adapter, transform):
    """``adapter`` (a Keras ``DataAdapter``) whose ``get_tf_dataset()`` returns ``transform(its dataset)``.

    Keras' ``fit`` / ``evaluate`` take a ``DataAdapter`` as ``x`` and use it as it is; every other method and
    property is ``adapter``'s own.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.compat import adapter_with_tf_dataset, keras_data_adapter
        >>> adapter = adapter_with_tf_dataset(keras_data_adapter(np.zeros((10, 3)), batch_size=4),
        ...                                   lambda dataset: dataset.take(1))
        >>> adapter.num_batches, len(list(adapter.get_tf_dataset()))
        (3, 1)
    """
    try:
        from keras.src.trainers.data_adapters.data_adapter import DataAdapter
    except ImportError:
        raise RuntimeError(_changed("keras", "keras.src.trainers.data_adapters.data_adapter.DataAdapter")) from None

    class TransformedTFDataset(DataAdapter):
        def get_tf_dataset(self):
            return transform(adapter.get_tf_dataset())

        def __getattribute__(self, name):  # everything else is the wrapped adapter's
            if name == "get_tf_dataset":
                return object.__getattribute__(self, name)
            return getattr(adapter, name)

    return TransformedTFDataset()
