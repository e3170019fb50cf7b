"""GPT (``OpenAIGPTLMHeadModel``) and GPT-2 (``GPT2LMHeadModel``) <-> :class:`TransformerForCausalLM`.

Both are decoder-only stacks with learned positions and a tied LM head, and store their projections as
``Conv1D`` (weights already ``(in, out)``, like a Keras kernel) with query, key and value fused into one
``c_attn`` of width 3 * d_model.

- GPT: post-LN (``ln_1`` after attention, ``ln_2`` after the MLP), no final LayerNorm, MLP width fixed at
  4 * d_model, ``afn="gelu"`` meaning the tanh approximation (``gelu_new``).
- GPT-2: pre-LN (``ln_1``/``ln_2`` before each sub-layer) with a final ``ln_f``, ``n_inner`` MLP width,
  ``activation_function`` from ``ACT2FN`` (``gelu_new`` by default).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .common import (WeightMap, conv1d, fold_embedding_scale, fused, layer_norm, linear, model_state, position_table,
                     same)
from .config_fields import check_choice, plain_token_id, require, unsupported


class _GptFamily:
    """What differs between GPT and GPT-2 (names, normalisation, activations, config class).

    The module-level instances :data:`GPT` (``openai-gpt``, post-LN) and :data:`GPT2` (``gpt2``, pre-LN) are
    the converters; they expose the same interface as the ``bert`` and ``marian`` modules (``MODEL_TYPE``,
    ``ARCHITECTURES``, ``DEFAULT_CLASS``, ``SUPPORTED_CLASSES``, :meth:`config_from_transformers`,
    :meth:`weight_map`, :meth:`to_transformers_checkpoint`).

    Args:
        model_type: transformers' ``model_type`` (``"openai-gpt"``, ``"gpt2"``).
        architectures: transformers classes this family loads (all into ``TransformerForCausalLM``).
        export_architecture: the transformers class exports are written as.
        norm_first: pre-LN (GPT-2, with a final ``ln_f``) or post-LN (GPT).
        token_embedding: transformers' name of the token table (``"tokens_embed"``, ``"wte"``).
        position_embedding: transformers' name of the position table (``"positions_embed"``, ``"wpe"``).
        activations: transformers' activation names -> ours (import).
        export_activations: our activation names -> transformers' (export).
        activation_field: the config field holding the activation (``"afn"``, ``"activation_function"``).

    Example:
        >>> from vanilla_transformer.convert.gpt import GPT, GPT2
        >>> GPT.MODEL_TYPE, GPT.EXPORT_ARCHITECTURE, GPT.norm_first
        ('openai-gpt', 'OpenAIGPTLMHeadModel', False)
        >>> GPT2.MODEL_TYPE, GPT2.EXPORT_ARCHITECTURE, GPT2.norm_first, GPT2.ARCHITECTURES["GPT2Model"]
        ('gpt2', 'GPT2LMHeadModel', True, 'TransformerForCausalLM')
    """

    DEFAULT_CLASS = "TransformerForCausalLM"
    SUPPORTED_CLASSES = ("TransformerForCausalLM",)

    def __init__(self, model_type, architectures, export_architecture, norm_first, token_embedding,
                 position_embedding, activations, export_activations, activation_field):
        self.MODEL_TYPE = model_type
        self.ARCHITECTURES = {name: "TransformerForCausalLM" for name in architectures}
        self.EXPORT_ARCHITECTURE = export_architecture
        self.norm_first = norm_first
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.activations = activations
        self.export_activations = export_activations
        self.activation_field = activation_field

    # -------------------------------------------------------------------------------------- config
    # Field-by-field mapping of this family's config to ours (alike in shape to the other families').
    def config_from_transformers(self, hf, model_class, tensors) -> dict:
        """Our config fields from an ``OpenAIGPTConfig`` (GPT) or a ``GPT2Config`` (GPT-2).

        Args:
            hf: the transformers config of this family.
            model_class: the class being loaded (always ``TransformerForCausalLM``); unused.
            tensors: the checkpoint's tensors by name; unused (accepted for a common signature).

        Returns:
            A dict of :class:`~vanilla_transformer.TransformerConfig` keyword arguments: a decoder-only stack
            with learned positions, ``d_ff`` 4 * ``n_embd`` (GPT) or ``n_inner`` (GPT-2, same default).

        Raises:
            UnsupportedConfigError: GPT-2 with cross-attention or non-standard attention scaling, or an
                activation our model lacks.

        Example:
            >>> from transformers import GPT2Config
            >>> from vanilla_transformer import TransformerForCausalLM
            >>> from vanilla_transformer.convert.gpt import GPT2
            >>> hf = GPT2Config(vocab_size=20, n_embd=8, n_layer=1, n_head=2, n_positions=32, bos_token_id=0,
            ...                 eos_token_id=0)
            >>> fields = GPT2.config_from_transformers(hf, TransformerForCausalLM, {})
            >>> fields["architecture"], fields["d_model"], fields["d_ff"], fields["num_decoder_layers"]
            ('decoder', 8, 32, 1)
            >>> fields["norm_first"], fields["final_layer_norm"], fields["activation"]
            (True, True, 'gelu_new')
        """
        if self.norm_first:
            require(not getattr(hf, "add_cross_attention", False), "add_cross_attention", True,
                    "GPT-2 with cross-attention is not supported")
            require(getattr(hf, "scale_attn_weights", True), "scale_attn_weights", False,
                    "attention without the 1/sqrt(d_k) scaling is not supported")
            require(not getattr(hf, "scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx",
                    True, "per-layer attention scaling is not supported")
            d_ff = hf.n_inner if hf.n_inner is not None else 4 * hf.n_embd
        else:
            d_ff = 4 * hf.n_embd
        activation = check_choice(self.activation_field, getattr(hf, self.activation_field), self.activations,
                                  "TransformerConfig")
        return dict(
            architecture="decoder",
            vocab_size=hf.vocab_size,
            d_model=hf.n_embd,
            num_heads=hf.n_head,
            d_ff=d_ff,
            num_encoder_layers=0,
            num_decoder_layers=hf.n_layer,
            dropout=float(hf.resid_pdrop),
            attention_dropout=float(hf.attn_pdrop),
            activation_dropout=0.0,
            max_position_embeddings=hf.n_positions,
            position_embedding="learned",
            norm_first=self.norm_first,
            final_layer_norm=self.norm_first,
            embedding_layer_norm=False,
            activation=activation,
            layer_norm_eps=float(hf.layer_norm_epsilon),
            scale_embedding=False,
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            final_logits_bias=False,
            type_vocab_size=0,
            add_pooler=False,
            initializer_range=float(hf.initializer_range),
            pad_token_id=hf.pad_token_id,
            bos_token_id=hf.bos_token_id,
            eos_token_id=hf.eos_token_id,
            decoder_start_token_id=None,
        )

    # -------------------------------------------------------------------------------------- weights
    def weight_map(self, config, model_class=None, prefix: str = "transformer.") -> WeightMap:
        """The map between our decoder's weights and this family's LM-head checkpoint.

        Args:
            config: our config (or anything with ``num_decoder_layers`` and ``tie_word_embeddings``).
            model_class: unused (one head class per family); accepted for a common signature.
            prefix: transformers' prefix for the body (``"transformer."`` in the LM-head classes).

        Returns:
            A :class:`~vanilla_transformer.convert.common.WeightMap`: the token and position tables, per layer
            the fused ``c_attn`` (``(d_model, 3 * d_model)`` split into our query, key and value kernels
            ``(d_model, d_model)``; its bias ``(3 * d_model,)`` likewise), three more ``Conv1D`` layers stored
            as ``(in, out)`` like our kernels, two LayerNorms, then ``ln_f`` (GPT-2) and an untied ``lm_head``
            (``nn.Linear`` weight ``(vocab, d_model)``) when ``tie_word_embeddings`` is False.

        Example:
            >>> from vanilla_transformer import TransformerConfig
            >>> from vanilla_transformer.convert.gpt import GPT2
            >>> config = TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2, d_ff=32,
            ...                            num_encoder_layers=0, num_decoder_layers=1, max_position_embeddings=32)
            >>> weights = GPT2.weight_map(config)
            >>> len(weights.entries), weights.prefix, weights.entries[-1].source
            (16, 'transformer.', 'ln_f.bias')
            >>> c_attn = weights.entries[2]
            >>> c_attn.source, [array.shape for array in c_attn.to_ours(np.zeros((8, 24), np.float32))]
            ('h.0.attn.c_attn.weight', [(8, 8), (8, 8), (8, 8)])
        """
        tied = config.tie_word_embeddings
        entries = [same("shared.embeddings", f"{self.token_embedding}.weight",
                        aliases=("lm_head.weight",) if tied else ()),
                   same("decoder.embed.embed_positions.embeddings", f"{self.position_embedding}.weight")]
        for i in range(config.num_decoder_layers):
            ours, source = f"decoder.layers.{i}", f"h.{i}"
            attn = f"{ours}.self_attn"
            entries += [fused((f"{attn}.q_proj.kernel", f"{attn}.k_proj.kernel", f"{attn}.v_proj.kernel"),
                              f"{source}.attn.c_attn.weight", axis=1),
                        fused((f"{attn}.q_proj.bias", f"{attn}.k_proj.bias", f"{attn}.v_proj.bias"),
                              f"{source}.attn.c_attn.bias", axis=0),
                        *conv1d(f"{attn}.o_proj", f"{source}.attn.c_proj"),
                        *layer_norm(f"{ours}.self_attn_layer_norm", f"{source}.ln_1"),
                        *conv1d(f"{ours}.feed_forward.fc1", f"{source}.mlp.c_fc"),
                        *conv1d(f"{ours}.feed_forward.fc2", f"{source}.mlp.c_proj"),
                        *layer_norm(f"{ours}.feed_forward_layer_norm", f"{source}.ln_2")]
        if self.norm_first:
            entries += layer_norm("decoder.layer_norm", "ln_f")
        if not tied:
            entries.append(linear("lm_head.kernel", "lm_head.weight"))
        return WeightMap(entries, prefix=prefix, strip_prefixes=("transformer.",), top_level=("lm_head",),
                         ignore=(r"h\.\d+\.attn\.(bias|masked_bias)", r"h\.\d+\.crossattention\.bias",
                                 r"position_ids"))

    # -------------------------------------------------------------------------------------- export
    def check_exportable(self, config) -> None:
        """Raise :class:`~vanilla_transformer.convert.config_fields.UnsupportedConfigError` for what the target lacks.

        Args:
            config: our config.

        Returns:
            None when :meth:`to_transformers_checkpoint` can represent the config: the family's normalisation
            (post-LN without final LayerNorm for GPT, pre-LN with one for GPT-2), no embedding LayerNorm,
            ``d_ff == 4 * d_model`` for GPT, and a supported activation.

        Example:
            >>> from vanilla_transformer import TransformerConfig
            >>> from vanilla_transformer.convert.gpt import GPT, GPT2
            >>> config = TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2, d_ff=32,
            ...                            num_encoder_layers=0, num_decoder_layers=1, max_position_embeddings=32)
            >>> GPT.check_exportable(config)
            >>> GPT2.check_exportable(config)
            Traceback (most recent call last):
            ...
            vanilla_transformer.convert.config_fields.UnsupportedConfigError: norm_first=False: GPT2LMHeadModel is pre-LN
        """
        target = self.EXPORT_ARCHITECTURE
        require(config.norm_first == self.norm_first, "norm_first", config.norm_first,
                f"{target} is {'pre' if self.norm_first else 'post'}-LN")
        require(config.final_layer_norm == self.norm_first, "final_layer_norm", config.final_layer_norm,
                f"{target} {'always has' if self.norm_first else 'has no'} LayerNorm after the last layer")
        require(not config.embedding_layer_norm, "embedding_layer_norm", config.embedding_layer_norm,
                f"{target} has no LayerNorm on the embeddings")
        if not self.norm_first:
            require(config.d_ff == 4 * config.d_model, "d_ff", config.d_ff,
                    f"OpenAIGPTLMHeadModel's MLP width is fixed at 4 * d_model = {4 * config.d_model}")
        check_choice("activation", config.activation, self.export_activations, target)

    def to_transformers_checkpoint(self, model, allow_inexact: bool = False):
        """``(OpenAIGPTConfig or GPT2Config, torch-layout tensors, architecture name)`` of ``model``.

        Sinusoidal positions become a learned table, a token-type row 0 is folded into the position table,
        a zero ``final_logits_bias`` is dropped, and ``scale_embedding`` is folded into the token table
        (untying the LM head).

        Args:
            model: a built ``TransformerForCausalLM``.
            allow_inexact: unused (GPT exports are exact or refused); accepted for a common signature.

        Returns:
            ``(hf_config, tensors, architecture)``: the family's transformers config, float32 numpy arrays by
            transformers name (``Conv1D`` weights ``(in, out)``, ``lm_head.weight`` ``(vocab, d_model)``), and
            :attr:`EXPORT_ARCHITECTURE`.

        Raises:
            UnsupportedConfigError: see :meth:`check_exportable`; also a non-zero ``final_logits_bias``.

        Example:
            >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
            >>> from vanilla_transformer.convert.gpt import GPT2
            >>> config = TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2, d_ff=32,
            ...                            num_encoder_layers=0, num_decoder_layers=1, max_position_embeddings=32,
            ...                            norm_first=True, final_layer_norm=True, activation="gelu_new",
            ...                            scale_embedding=False)
            >>> model = TransformerForCausalLM(config).build_weights()
            >>> hf, tensors, architecture = GPT2.to_transformers_checkpoint(model)
            >>> type(hf).__name__, architecture, hf.n_inner, hf.tie_word_embeddings, len(tensors)
            ('GPT2Config', 'GPT2LMHeadModel', 32, True, 16)
            >>> tensors["transformer.h.0.attn.c_attn.weight"].shape  # Conv1D (d_model, 3 * d_model)
            (8, 24)
        """
        from transformers import GPT2Config, OpenAIGPTConfig

        config = model.config
        self.check_exportable(config)
        state = model_state(model)
        if config.final_logits_bias:
            bias = state.pop("final_logits_bias")
            if np.any(bias):
                raise unsupported("final_logits_bias", True,
                                  f"{self.EXPORT_ARCHITECTURE} has no output bias (this one is non-zero)")
        position_table(state, config, "decoder.embed.embed_positions.embeddings")
        if config.type_vocab_size:
            # the decoder adds token-type embedding 0 to every position: fold it into the position table
            state["decoder.embed.embed_positions.embeddings"] = (
                state["decoder.embed.embed_positions.embeddings"]
                + state.pop("decoder.embed.token_type_embeddings.embeddings")[0][None, :])
        tied = fold_embedding_scale(state, config, "lm_head.kernel")
        eos = config.eos_token_id
        common = dict(
            vocab_size=config.vocab_size, n_positions=config.max_position_embeddings, n_embd=config.d_model,
            n_layer=config.num_decoder_layers, n_head=config.num_heads, resid_pdrop=config.dropout,
            embd_pdrop=config.dropout, attn_pdrop=config.attention_dropout, layer_norm_epsilon=config.layer_norm_eps,
            initializer_range=config.initializer_range, pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id, eos_token_id=plain_token_id(eos),
            tie_word_embeddings=tied)
        activation = self.export_activations[config.activation]
        if self.norm_first:
            hf = GPT2Config(n_inner=config.d_ff, activation_function=activation, **common)
        else:
            hf = OpenAIGPTConfig(afn=activation, **common)
        layout = SimpleNamespace(num_decoder_layers=config.num_decoder_layers, tie_word_embeddings=tied)
        return hf, self.weight_map(layout).to_source(state), self.EXPORT_ARCHITECTURE


_GPT2_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu",
                     "swish": "swish", "silu": "silu"}
_OPENAI_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "swish": "swish", "silu": "silu"}

GPT = _GptFamily(
    "openai-gpt", ("OpenAIGPTLMHeadModel", "OpenAIGPTModel"), "OpenAIGPTLMHeadModel",
    norm_first=False, token_embedding="tokens_embed", position_embedding="positions_embed",
    activations=_OPENAI_ACTIVATIONS,
    export_activations={"gelu_new": "gelu", "relu": "relu", "swish": "swish", "silu": "silu"},
    activation_field="afn")
GPT2 = _GptFamily(
    "gpt2", ("GPT2LMHeadModel", "GPT2Model"), "GPT2LMHeadModel",
    norm_first=True, token_embedding="wte", position_embedding="wpe", activations=_GPT2_ACTIVATIONS,
    export_activations={"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu", "swish": "swish", "silu": "silu"},
    activation_field="activation_function")
