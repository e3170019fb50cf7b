"""The model classes: the paper's encoder-decoder, a BERT-style encoder and a GPT-style decoder.

All are ``keras.Model`` subclasses built from one :class:`TransformerConfig` and the layers in
:mod:`vanilla_transformer.layers`. Weights carry stable names (``encoder.layers.0.self_attn.q_proj.kernel``)
given by the attribute path (:mod:`vanilla_transformer.weight_names`), which is what ``save_pretrained`` writes
to safetensors; every call's inputs are checked first (:mod:`vanilla_transformer.input_checks`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import lora, serving
from .configuration import TransformerConfig
from .distribution import MultiWorkerTrainerFixes
from .generation import GenerationMixin, translate_texts
from .hub_mixin import HubMixin
from .input_checks import ModelInputChecks
from .input_pipeline import AutotuneOffInputs
from .layers import Dropout, TokenEmbedding, TransformerDecoder, TransformerEncoder
from .layers.feed_forward import activation_fn
from .losses import CausalLMAccuracy, CausalLMLoss, MaskedAccuracy, MaskedSparseCrossEntropy
from .optimization import language_model_optimizer, transformer_optimizer
from .precision import cpu_bfloat16_units
from .weight_names import named_variables


def default_jit_compile(model: keras.Model, cpu_flags=None) -> bool:
    """Whether ``compile(jit_compile="auto")`` turns XLA on: yes, except under ``MultiWorkerMirroredStrategy``
    on CPUs, and for bfloat16 compute on a CPU that computes bfloat16 natively (AVX512-BF16, AMX).

    XLA's CPU backend computes bfloat16 dots in float32, while TensorFlow's oneDNN kernels use the CPU's
    bfloat16 units, so on such a CPU ``mixed_bfloat16`` trains faster without XLA. On a CPU without bfloat16
    units TensorFlow's own kernels emulate bfloat16 and XLA's float32 dots are the faster path, so XLA stays on
    (``precision.auto_policy`` picks float32 there). Measurements: docs/benchmarks.md, "bfloat16 on a CPU" and
    "Which precision `auto` picks". And XLA has no collectives for CPU devices ("Collectives are not yet
    implemented for CPU devices when compiling with XLA"), which the multi-worker all-reduce needs.

    On JAX always True (XLA is its only compiler). On PyTorch False: ``torch.compile`` recompiles for every new
    batch shape, and eager steps are faster (docs/benchmarks.md, "PyTorch: eager against torch.compile").

    Args:
        model: a Keras model (its dtype policy and distribution strategy are read).
        cpu_flags: the CPU's feature flags; default: this machine's (``precision.read_cpu_flags``).

    Returns:
        The ``jit_compile`` value ``compile(jit_compile="auto")`` uses.

    Example:
        >>> import keras
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.modeling import default_jit_compile
        >>> default_jit_compile(TransformerForSeq2SeqLM(example_config))  # float32: XLA on every device
        True
        >>> bf16 = TransformerForSeq2SeqLM(example_config, dtype="mixed_bfloat16")
        >>> cpu_only = all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())
        >>> default_jit_compile(bf16, cpu_flags={"avx2", "fma"})  # bfloat16 emulated: XLA's float32 dots
        True
        >>> default_jit_compile(bf16, cpu_flags={"avx2", "fma", "avx512_bf16"}) == (not cpu_only)
        True
    """
    if keras.backend.backend() == "torch":
        return False
    if keras.backend.backend() != "tensorflow":
        return True  # JAX has no non-XLA path worth choosing
    import tensorflow as tf

    on_cpu_only = all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())
    multi_worker = isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)
    native_bf16 = model.dtype_policy.compute_dtype == "bfloat16" and bool(cpu_bfloat16_units(cpu_flags))
    return not (on_cpu_only and (native_bf16 or multi_worker))


class TransformerPreTrainedModel(ModelInputChecks, HubMixin, AutotuneOffInputs, MultiWorkerTrainerFixes,
                                 keras.Model):
    """Base of all model classes: config, input checks, naming, saving/loading and compile defaults.

    ``TransformerPreTrainedModel.from_pretrained`` (like ``AutoModel``) builds the class named in the
    checkpoint's ``config.architectures``; a concrete class loads as itself.

    Args:
        config: a :class:`TransformerConfig` (or its dict); ``config.architecture`` must be one the
            subclass supports.
        **kwargs: passed to ``keras.Model`` (``name``, ``dtype``).

    Inputs are int32 id arrays ``(batch, seq)`` (lists and numpy are checked: integer dtype, rank 2,
    ``seq <= max_position_embeddings``, ids in ``[0, vocab_size)``) and 0/1 masks of the same shape.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM, TransformerPreTrainedModel
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> model.num_parameters()  # embeddings 20 x 8 + one decoder layer (sinusoidal positions: no weights)
        760
        >>> folder = model.save_pretrained(tempfile.mkdtemp())
        >>> type(TransformerPreTrainedModel.from_pretrained(folder)).__name__  # from config.architectures
        'TransformerForCausalLM'
        >>> model({"input_ids": [[1, 2, 99]]})
        Traceback (most recent call last):
        ...
        ValueError: input_ids holds ids outside [0, vocab_size=20): min 1, max 99
    """

    config_class = TransformerConfig
    resolves_architecture = True
    #: the ``config.architecture`` values this class accepts
    supported_architectures: tuple[str, ...] = ()
    #: pipeline tag of the Hub model card
    pipeline_tag: str | None = None

    def __init__(self, config: TransformerConfig, **kwargs):
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if self.supported_architectures and config.architecture not in self.supported_architectures:
            raise ValueError(
                f"{type(self).__name__} needs config.architecture in {self.supported_architectures}, "
                f"got {config.architecture!r}")
        kwargs.setdefault("name", type(self).__name__)
        super().__init__(**kwargs)
        self.config = config
        from transformers import GenerationConfig

        self.generation_config = GenerationConfig.from_model_config(config)
        #: where the weights came from (a directory or Hub repo id), the commit read, and the loading report
        self.name_or_path: str | None = None
        self.commit_hash: str | None = None
        self.loading_info: dict[str, list[str]] | None = None
        #: extra model card information used by ``save_pretrained`` / ``push_to_hub`` (see ``render_model_card``)
        self.model_card_info: dict = {}
        self.shared = TokenEmbedding(
            config.vocab_size, config.d_model, self._embedding_initializer(config), name="shared")

    @staticmethod
    def _embedding_initializer(config):
        # With scaled embeddings (section 3.4) N(0, d_model^-0.5) gives the scaled lookup unit variance.
        stddev = config.d_model ** -0.5 if config.scale_embedding else config.initializer_range
        return keras.initializers.RandomNormal(stddev=stddev)

    # ---------------------------------------------------------------- Keras serialization
    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name,
                "generation_config": self.generation_config.to_diff_dict()}

    @classmethod
    def from_config(cls, config):
        model = cls(TransformerConfig.from_dict(config["config"]), name=config.get("name"))
        if config.get("generation_config"):
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_dict(config["generation_config"])
        return model

    def record_origin(self, name_or_path, commit_hash: str | None = None, loading_info: dict | None = None):
        """Remember where the loaded weights came from and the loading report (``missing_keys``, ...)."""
        self.name_or_path = None if name_or_path is None else str(name_or_path)
        self.commit_hash = commit_hash
        self.loading_info = loading_info

    # ---------------------------------------------------------------- names and building
    def named_variables(self) -> dict[str, keras.Variable]:
        """Weights by stable name (the keys of ``model.safetensors``)."""
        self.build_weights()
        return named_variables(self)

    def dummy_inputs(self) -> dict[str, np.ndarray]:
        ids = np.array([[1, 2]], dtype="int32") % self.config.vocab_size
        return {name: ids for name in self.input_names}

    def build_weights(self):
        """Create every weight by running the model once on a tiny input."""
        if not self.built:
            self(self.dummy_inputs(), training=False)
        return self

    # ---------------------------------------------------------------- LoRA
    #: the LoRA settings while the model has adapters (:mod:`vanilla_transformer.lora`), else None
    lora_config = None
    lora_frozen: tuple[str, ...] = ()

    def enable_lora(self, rank: int, lora_alpha: float | None = None, lora_dropout: float = 0.0,
                    target_modules=None, modules_to_save=None, verbose: bool = True):
        """Put LoRA adapters on ``target_modules`` and freeze the rest; see
        :func:`vanilla_transformer.lora.enable_lora`. Returns the :class:`~vanilla_transformer.lora.LoraConfig`."""
        return lora.enable_lora(self, rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                target_modules=target_modules, modules_to_save=modules_to_save, verbose=verbose)

    def merge_lora(self):
        """Fold the adapters into the weights (a plain model again); see :func:`vanilla_transformer.lora.merge_lora`."""
        return lora.merge_lora(self)

    def num_parameters(self) -> int:
        self.build_weights()
        return int(sum(np.prod(v.shape) for v in self.named_variables().values() if v.trainable))

    # ---------------------------------------------------------------- training defaults
    def compile(self, optimizer=None, loss=None, metrics=None, jit_compile="auto", **kwargs):
        """Keras ``compile`` with the paper's defaults (section 5.3, 5.4) when arguments are omitted.

        - optimizer: Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9) on the warmup / inverse-sqrt schedule;
        - loss: cross-entropy with label smoothing ``config.label_smoothing``, ignoring labels ``-100``;
        - metrics: token accuracy over labels that are not ``-100``;
        - ``jit_compile="auto"``: see :func:`default_jit_compile` (XLA, except bfloat16 on a CPU with
          bfloat16 units, where oneDNN's kernels are faster).
        """
        if optimizer is None:
            optimizer = transformer_optimizer(self.config.d_model, warmup_steps=4000)
        if loss is None:
            loss = MaskedSparseCrossEntropy(label_smoothing=self.config.label_smoothing)
        if metrics is None:
            metrics = [MaskedAccuracy()]
        if jit_compile in ("auto", None):
            jit_compile = default_jit_compile(self)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **kwargs)

    # ---------------------------------------------------------------- shared head helpers
    def _vocabulary_projection(self, hidden):
        """``hidden (..., d_model)`` -> float32 ``(..., vocab_size)``: tied to the token embedding (3.4) or a
        separate ``lm_head`` matrix (:meth:`_build_vocabulary_projection`); no bias."""
        logits = self.shared.attend(hidden) if self.config.tie_word_embeddings else self.lm_head(hidden)
        return ops.cast(logits, "float32")

    def _build_vocabulary_projection(self):
        if not self.config.tie_word_embeddings:
            self.lm_head = keras.layers.Dense(self.config.vocab_size, use_bias=False, name="lm_head")
            self.lm_head.build((None, None, self.config.d_model))

    def _logits(self, hidden):
        """The LM head: the vocabulary projection plus, with ``config.final_logits_bias``, Marian's fixed bias."""
        logits = self._vocabulary_projection(hidden)
        if self.config.final_logits_bias:
            logits = logits + ops.cast(self.final_logits_bias, "float32")
        return logits

    def _build_lm_head(self):
        self._build_vocabulary_projection()
        if self.config.final_logits_bias:
            self.final_logits_bias = self.add_weight(
                name="final_logits_bias", shape=(self.config.vocab_size,), initializer="zeros", trainable=False)


class TransformerForSeq2SeqLM(GenerationMixin, TransformerPreTrainedModel):
    """The paper's encoder-decoder Transformer with a (tied) language-modelling head.

    Called on ``{"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}`` (masks
    optional, 1 = token, 0 = padding) it returns logits ``(batch, target_len, vocab_size)`` in float32.
    Packed rows (several pairs per row, from :class:`~vanilla_transformer.data_collators.PackedSeq2SeqCollator`)
    give ``segment_ids``/``position_ids`` and ``decoder_segment_ids``/``decoder_position_ids`` instead of masks.

    >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
    >>> import numpy as np
    >>> config = TransformerConfig(vocab_size=50, d_model=16, num_heads=2, d_ff=32,
    ...                            num_encoder_layers=1, num_decoder_layers=1)
    >>> model = TransformerForSeq2SeqLM(config)
    >>> logits = model({"input_ids": np.array([[5, 6, 2]]), "decoder_input_ids": np.array([[1, 7]])})
    >>> tuple(logits.shape)
    (1, 2, 50)
    """

    supported_architectures = ("encoder-decoder",)
    pipeline_tag = "translation"
    input_names = ("input_ids", "decoder_input_ids")
    optional_input_names = ("attention_mask", "decoder_attention_mask", "segment_ids", "position_ids",
                            "decoder_segment_ids", "decoder_position_ids")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.encoder = TransformerEncoder(config, self.shared, name="encoder")
        self.decoder = TransformerDecoder(config, self.shared, cross_attention=True, name="decoder")

    def build(self, input_shape=None):
        self.shared.build()
        self.encoder.build()
        self.decoder.build()
        self._build_lm_head()
        self.built = True

    def encode(self, input_ids, attention_mask=None, training=False):
        """Encoder output ``(batch, src, d_model)``."""
        return self.encoder(input_ids, attention_mask=attention_mask, training=training)

    def call(self, inputs, training=False):
        inputs = self.call_inputs(inputs)
        if ("segment_ids" in inputs) != ("decoder_segment_ids" in inputs):
            raise ValueError("packed rows need both segment_ids and decoder_segment_ids")
        attention_mask = inputs.get("attention_mask")
        encoder_hidden = self.encoder(inputs["input_ids"], attention_mask=attention_mask,
                                      position_ids=inputs.get("position_ids"), segment_ids=inputs.get("segment_ids"),
                                      training=training)
        hidden, _ = self.decoder(
            inputs["decoder_input_ids"], attention_mask=inputs.get("decoder_attention_mask"),
            encoder_hidden_states=encoder_hidden, encoder_attention_mask=attention_mask,
            position_ids=inputs.get("decoder_position_ids"), segment_ids=inputs.get("decoder_segment_ids"),
            encoder_segment_ids=inputs.get("segment_ids"), training=training)
        return self._logits(hidden)

    # the decoding protocol of generation.GenerationMixin
    def decoding_context(self, input_ids, attention_mask):
        return {"encoder_hidden_states": self.encode(input_ids, attention_mask),
                "encoder_attention_mask": attention_mask}

    def init_decoding_cache(self, context, batch_size, max_length):
        return self.decoder.init_cache(batch_size, max_length, context["encoder_hidden_states"])

    def decode_step(self, token_ids, cache, cache_index, context, key_mask=None, position_ids=None):
        hidden, cache = self.decoder(
            token_ids, attention_mask=key_mask, encoder_hidden_states=context["encoder_hidden_states"],
            encoder_attention_mask=context["encoder_attention_mask"], position_ids=position_ids, cache=cache,
            cache_index=cache_index)
        return self._logits(hidden), cache

    def export_for_serving(self, path, to: str = "saved_model", tokenizer=None, **settings):
        """Export this translator for deployment: a TensorFlow Serving SavedModel with the decoding loop in
        the graph (``to="saved_model"``), a LiteRT greedy translator (``"litert"``) or a CTranslate2 model
        (``"ctranslate2"``); see :func:`vanilla_transformer.serving.export` for the settings. (``"transformers"``
        is deprecated, with a ``FutureWarning``: use ``save_pretrained(path, format="transformers")``.)

        Returns the written path (a :class:`pathlib.Path`).
        """
        return serving.export(self, path, to=to, tokenizer=tokenizer, **settings)

    def translate(self, texts, tokenizer, batch_size: int = 64, **generation_kwargs) -> list[str]:
        """Translate a list of strings with ``tokenizer``; keyword arguments go to :meth:`generate` (see
        :func:`vanilla_transformer.generation.translate_texts`)."""
        return translate_texts(self, texts, tokenizer, batch_size=batch_size, **generation_kwargs)


class _LanguageModelCompile:
    """``compile`` defaults of the (pre)training language models (causal and masked)."""

    def compile(self, optimizer=None, loss=None, metrics=None, jit_compile="auto", learning_rate=5e-4,
                warmup_steps=0, decay_steps=None, **kwargs):
        """Language-model (pre)training defaults when arguments are omitted.

        - optimizer: Adam (beta_2 0.999, epsilon 1e-6, gradient norm clipped to 1) at ``learning_rate``, with
          a linear warmup over ``warmup_steps`` and, given ``decay_steps`` (total steps), linear decay to 0;
        - loss and metrics: the class's :meth:`default_loss_and_metrics`.
        """
        default_loss, default_metrics = self.default_loss_and_metrics()
        super().compile(
            optimizer=optimizer or language_model_optimizer(learning_rate, warmup_steps, decay_steps),
            loss=loss or default_loss, metrics=metrics or default_metrics, jit_compile=jit_compile, **kwargs)


class TransformerForCausalLM(_LanguageModelCompile, GenerationMixin, TransformerPreTrainedModel):
    """GPT-style decoder-only Transformer (no cross-attention) with a tied LM head.

    ``{"input_ids", "attention_mask"} -> logits (batch, seq, vocab_size)``; position t sees tokens <= t.

    Inputs: ``input_ids`` int ``(batch, seq)``, optional ``attention_mask`` (1 token, 0 padding) and
    ``position_ids`` of the same shape (or ``input_ids`` alone, not in a dict). Logits are float32.
    Needs ``config.architecture == "decoder"``; ``generate`` continues prompts.

    Example:
        >>> import keras
        >>> import numpy as np
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> logits = model({"input_ids": np.array([[5, 6, 7, 8], [9, 10, 0, 0]], "int32"),
        ...                 "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], "int32")})
        >>> tuple(logits.shape), keras.backend.standardize_dtype(logits.dtype)
        ((2, 4, 20), 'float32')
        >>> later = model(np.array([[5, 6, 7, 11]], "int32"))  # only the last token differs ...
        >>> bool(np.allclose(logits[0, :3], later[0, :3], atol=1e-6))  # ... so earlier positions are unchanged
        True
    """

    supported_architectures = ("decoder",)
    pipeline_tag = "text-generation"
    input_names = ("input_ids",)
    optional_input_names = ("attention_mask", "position_ids")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.decoder = TransformerDecoder(config, self.shared, cross_attention=False, name="decoder")

    def build(self, input_shape=None):
        self.shared.build()
        self.decoder.build()
        self._build_lm_head()
        self.built = True

    def call(self, inputs, training=False):
        inputs = self.call_inputs(inputs)
        hidden, _ = self.decoder(inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                 position_ids=inputs.get("position_ids"), training=training)
        return self._logits(hidden)

    def decoding_context(self, input_ids, attention_mask):
        return {}

    def init_decoding_cache(self, context, batch_size, max_length):
        return self.decoder.init_cache(batch_size, max_length)

    def decode_step(self, token_ids, cache, cache_index, context, key_mask=None, position_ids=None):
        hidden, cache = self.decoder(token_ids, attention_mask=key_mask, position_ids=position_ids, cache=cache,
                                     cache_index=cache_index)
        return self._logits(hidden), cache

    def default_loss_and_metrics(self):
        """Causal LM: :class:`~vanilla_transformer.losses.CausalLMLoss` (logits at t against the label at t + 1;
        labels are the unshifted input ids, -100 ignored; no label smoothing) and next-token accuracy."""
        return CausalLMLoss(), [CausalLMAccuracy()]


class _EncoderOnly(TransformerPreTrainedModel):
    supported_architectures = ("encoder",)
    input_names = ("input_ids",)
    optional_input_names = ("attention_mask", "token_type_ids")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.encoder = TransformerEncoder(config, self.shared, name="encoder")
        if config.add_pooler:
            self.pooler = keras.layers.Dense(config.d_model, activation="tanh", name="pooler")

    def build(self, input_shape=None):
        self.shared.build()
        self.encoder.build()
        if self.config.add_pooler:
            self.pooler.build((None, self.config.d_model))
        self._build_head()
        self.built = True

    def _build_head(self):
        pass

    def _encode(self, inputs, training):
        inputs = self.call_inputs(inputs)
        return self.encoder(inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                            token_type_ids=inputs.get("token_type_ids"), training=training)

    def _pool(self, hidden):
        """BERT's pooler: dense + tanh on the first token's hidden state, ``(batch, d_model)``."""
        first = hidden[:, 0, :]
        return self.pooler(first) if self.config.add_pooler else first


class TransformerEncoderModel(_EncoderOnly):
    """BERT-style encoder without a head: returns the last hidden states ``(batch, seq, d_model)``.

    ``{"input_ids", "attention_mask", "token_type_ids"}`` int ``(batch, seq)`` (masks and segment ids
    optional) -> hidden states in the compute dtype (float32 by default). Needs
    ``config.architecture == "encoder"``.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer import TransformerConfig, TransformerEncoderModel
        >>> config = TransformerConfig(**example_sizes, architecture="encoder")
        >>> model = TransformerEncoderModel(config)
        >>> hidden = model({"input_ids": np.array([[1, 5, 6, 2]], "int32")})
        >>> tuple(hidden.shape)
        (1, 4, 8)
    """

    pipeline_tag = "feature-extraction"

    def call(self, inputs, training=False):
        return self._encode(inputs, training)


class TransformerForMaskedLM(_LanguageModelCompile, _EncoderOnly):
    """BERT-style encoder + MLM head: dense + activation + LayerNorm + tied projection with its own bias.

    ``{"input_ids", "attention_mask", "token_type_ids"} -> logits (batch, seq, vocab_size)``.

    Inputs are int ``(batch, seq)`` (masks and segment ids optional); logits are float32. Needs
    ``config.architecture == "encoder"``; train it with
    :class:`~vanilla_transformer.data_collators.DataCollatorForMaskedLM` batches.

    Example:
        >>> import keras
        >>> import numpy as np
        >>> from vanilla_transformer import TransformerConfig, TransformerForMaskedLM
        >>> config = TransformerConfig(**example_sizes, architecture="encoder", mask_token_id=4)
        >>> model = TransformerForMaskedLM(config)
        >>> logits = model({"input_ids": np.array([[1, 5, 4, 2]], "int32")})  # 4: the mask token
        >>> tuple(logits.shape), keras.backend.standardize_dtype(logits.dtype)
        ((1, 4, 20), 'float32')
        >>> keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1)).shape  # one predicted id per position
        (1, 4)
    """

    pipeline_tag = "fill-mask"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.mlm_dense = keras.layers.Dense(config.d_model, name="mlm_dense")
        self.mlm_layer_norm = keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name="mlm_layer_norm")
        self._mlm_activation = activation_fn(config.activation)

    def _build_head(self):
        self.mlm_dense.build((None, None, self.config.d_model))
        self.mlm_layer_norm.build((None, None, self.config.d_model))
        self.mlm_bias = self.add_weight(name="mlm_bias", shape=(self.config.vocab_size,), initializer="zeros")
        self._build_vocabulary_projection()

    def call(self, inputs, training=False):
        hidden = self._encode(inputs, training)
        hidden = self.mlm_layer_norm(self._mlm_activation(self.mlm_dense(hidden)))
        return self._vocabulary_projection(hidden) + ops.cast(self.mlm_bias, "float32")

    def default_loss_and_metrics(self):
        """Masked LM: cross-entropy and accuracy over the masked positions only (labels != -100), no label
        smoothing."""
        return MaskedSparseCrossEntropy(label_smoothing=0.0), [MaskedAccuracy()]


class TransformerForSequenceClassification(_EncoderOnly):
    """BERT-style encoder + pooler on the first token + dropout + classifier.

    ``{"input_ids", "attention_mask", "token_type_ids"} -> logits (batch, num_labels)``. Labels come from
    ``config.num_labels`` / ``config.id2label``.

    Inputs are int ``(batch, seq)`` (masks and segment ids optional); logits are float32. Needs
    ``config.architecture == "encoder"``; ``add_pooler=True`` adds BERT's dense + tanh pooler.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer import TransformerConfig, TransformerForSequenceClassification
        >>> config = TransformerConfig(**example_sizes, architecture="encoder", num_labels=3)
        >>> model = TransformerForSequenceClassification(config)
        >>> logits = model({"input_ids": np.array([[1, 5, 6, 2], [1, 7, 2, 0]], "int32"),
        ...                 "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]], "int32")})
        >>> tuple(logits.shape)
        (2, 3)
    """

    pipeline_tag = "text-classification"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.classifier_dropout = Dropout(config.dropout)
        self.classifier = keras.layers.Dense(config.num_labels, name="classifier")

    def _build_head(self):
        self.classifier.build((None, self.config.d_model))

    def call(self, inputs, training=False):
        pooled = self._pool(self._encode(inputs, training))
        return ops.cast(self.classifier(self.classifier_dropout(pooled, training=training)), "float32")

    def compile(self, optimizer=None, loss=None, metrics=None, jit_compile="auto", **kwargs):
        """Adam(2e-5) with sparse categorical cross-entropy and accuracy unless given (fine-tuning)."""
        super().compile(
            optimizer=optimizer or keras.optimizers.Adam(2e-5),
            loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics or [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile, **kwargs)


MODEL_CLASSES = {
    cls.__name__: cls
    for cls in (TransformerForSeq2SeqLM, TransformerForCausalLM, TransformerEncoderModel, TransformerForMaskedLM,
                TransformerForSequenceClassification)
}
for _cls in MODEL_CLASSES.values():
    keras.saving.register_keras_serializable(package="vanilla_transformer")(_cls)
del _cls
