"""Low-rank adapters (LoRA, Hu et al., 2021) on the layers: ``W x`` becomes ``W x + (alpha / r) B A dropout(x)``.

Two layers carry them: :class:`LoraDense`, a ``keras.layers.Dense`` (every attention and feed-forward projection
of the model is one), and the token embedding (:class:`LoraEmbeddingMixin`, used by
:class:`~vanilla_transformer.layers.TokenEmbedding`).

:class:`LoraDense` enables the adapter with Keras' own ``Dense.enable_lora`` (the ``lora_kernel_a`` ``(in, r)`` and
``lora_kernel_b`` ``(r, out)`` weights, the frozen kernel, ``Dense.kernel`` as the merged kernel that ``.keras``
files store), and adds what Keras lacks: PEFT's dropout on the adapter's input, a forward pass that keeps the
adapter a separate low-rank branch (so a small update is not rounded away in a bfloat16 merged kernel), and
:meth:`LoraDense.merge_lora`, which folds the adapter into the kernel and removes it.

The embedding adapter follows PEFT's ``lora.Embedding``: it changes the lookup only (``lora_embeddings_a``
``(vocab, r)`` looked up, times ``lora_embeddings_b`` ``(r, d_model)``), not the tied output projection, and
takes no dropout.
"""

from __future__ import annotations

import keras
from keras import ops

from .dropout import Dropout


def check_lora_settings(rank, lora_alpha, lora_dropout: float = 0.0) -> float:
    """Validate an adapter's rank, alpha and dropout; returns alpha (``rank`` when None).

    Args:
        rank: the adapter's rank r, a positive integer.
        lora_alpha: the scale numerator (the update is scaled by ``lora_alpha / rank``), positive; None: ``rank``.
        lora_dropout: dropout rate on the adapter's input, in [0, 1).

    Returns:
        ``lora_alpha`` as a float.

    Example:
        >>> from vanilla_transformer.layers.lora import check_lora_settings
        >>> check_lora_settings(4, None), check_lora_settings(4, 16)
        (4.0, 16.0)
        >>> check_lora_settings(0, None)
        Traceback (most recent call last):
        ...
        ValueError: rank=0 must be a positive integer
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank={rank!r} must be a positive integer")
    alpha = float(rank if lora_alpha is None else lora_alpha)
    if not alpha > 0:
        raise ValueError(f"lora_alpha={lora_alpha!r} must be positive")
    if not 0.0 <= float(lora_dropout) < 1.0:
        raise ValueError(f"lora_dropout={lora_dropout!r} must be in [0, 1)")
    return alpha


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class LoraDense(keras.layers.Dense):
    """``keras.layers.Dense`` whose LoRA adapter has PEFT's dropout and can be merged away.

    Without an adapter it is a plain ``Dense``. After :meth:`enable_lora`, ``call`` computes
    ``x W + b + (alpha / r) dropout(x) A B`` with ``A = lora_kernel_a (in, r)`` (Keras' ``he_uniform``
    initialisation) and ``B = lora_kernel_b (r, out)`` (zeros), the kernel frozen.

    Args:
        units: output width.
        **kwargs: those of ``keras.layers.Dense``.

    Example:
        >>> from vanilla_transformer.layers.lora import LoraDense
        >>> layer = LoraDense(4)
        >>> layer.build((None, 8))
        >>> layer.enable_lora(2, lora_alpha=4, lora_dropout=0.1)
        >>> [(w.name, w.trainable) for w in layer.weights]
        [('kernel', False), ('bias', True), ('lora_kernel_a', True), ('lora_kernel_b', True)]
        >>> x = np.ones((3, 8), "float32")
        >>> before = keras.ops.convert_to_numpy(layer(x))
        >>> _ = layer.lora_kernel_b.assign(np.ones((2, 4), "float32"))  # a trained adapter
        >>> after = keras.ops.convert_to_numpy(layer(x))
        >>> layer.merge_lora()
        >>> layer.lora_enabled, [w.name for w in layer.weights]
        (False, ['kernel', 'bias'])
        >>> bool(np.allclose(keras.ops.convert_to_numpy(layer(x)), after, atol=1e-5))
        True
    """

    def enable_lora(self, rank, lora_alpha=None, lora_dropout: float = 0.0, a_initializer="he_uniform",
                    b_initializer="zeros"):
        """Add a rank-``rank`` adapter and freeze the kernel (Keras' ``Dense.enable_lora`` plus dropout).

        Args:
            rank: the adapter's rank r.
            lora_alpha: the update is scaled by ``lora_alpha / rank``; None: ``rank`` (scale 1).
            lora_dropout: dropout rate on the adapter's input during training (PEFT's ``lora_dropout``).
            a_initializer: initializer of ``lora_kernel_a``.
            b_initializer: initializer of ``lora_kernel_b`` (zeros: the adapter starts as the identity).

        Returns:
            None.
        """
        alpha = check_lora_settings(rank, lora_alpha, lora_dropout)
        super().enable_lora(rank, lora_alpha=alpha, a_initializer=a_initializer, b_initializer=b_initializer)
        self._tracker.unlock()
        self.lora_dropout = Dropout(float(lora_dropout), dtype=self.dtype_policy)
        self._tracker.lock()

    @property
    def lora_scale(self) -> float:
        """``lora_alpha / lora_rank``, the factor of the adapter's update."""
        return self.lora_alpha / self.lora_rank

    def call(self, inputs, training=None):
        if not self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs, training=training)
        outputs = ops.matmul(inputs, ops.cast(self._kernel, self.compute_dtype))
        low_rank = ops.matmul(self.lora_dropout(inputs, training=bool(training)),
                              ops.cast(self.lora_kernel_a, self.compute_dtype))
        update = ops.matmul(low_rank, ops.cast(self.lora_kernel_b, self.compute_dtype))
        outputs = outputs + update * ops.cast(self.lora_scale, self.compute_dtype)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)

    def merge_lora(self) -> None:
        """Fold the adapter into the kernel (``W + (alpha / r) A B``), remove it and unfreeze the kernel."""
        if not self.lora_enabled:
            return
        merged = ops.add(self._kernel, self.lora_scale * ops.matmul(self.lora_kernel_a, self.lora_kernel_b))
        self._kernel.assign(ops.cast(merged, self._kernel.dtype))
        drop_adapter(self, ("lora_kernel_a", "lora_kernel_b"))
        self._kernel.trainable = True


def drop_adapter(layer: keras.layers.Layer, names: tuple[str, ...]) -> None:
    """Remove a layer's adapter weights ``names`` (untracked by Keras) and mark LoRA off.

    Args:
        layer: a :class:`LoraDense` or token embedding with an adapter.
        names: the attribute names of its adapter weights.

    Returns:
        None.

    Example:
        >>> from vanilla_transformer.layers.lora import LoraDense, drop_adapter
        >>> layer = LoraDense(2)
        >>> layer.build((None, 3))
        >>> layer.enable_lora(1)
        >>> drop_adapter(layer, ("lora_kernel_a", "lora_kernel_b"))
        >>> layer.lora_enabled, len(layer.weights)
        (False, 2)
    """
    for name in names:
        # what Keras' Layer.__delattr__ does, less the gc.collect() it runs per variable (0.1-1 s each)
        layer._untrack_variable(getattr(layer, name))
        super(keras.layers.Layer, layer).__delattr__(name)
    layer.lora_enabled = False


class LoraEmbeddingMixin:
    """LoRA on a token embedding's lookup (PEFT's ``lora.Embedding``): ``E[ids] + (alpha / r) A[ids] B``.

    The host layer holds ``embeddings (vocab, d_model)``; ``A = lora_embeddings_a (vocab, r)`` starts at zero
    and ``B = lora_embeddings_b (r, d_model)`` at Keras' ``he_uniform``, as PEFT does (zero update at
    first). The tied output projection reads the frozen table only, as in PEFT, whose LoRA wraps the input
    embedding module alone.

    Example:
        >>> from vanilla_transformer.layers import TokenEmbedding
        >>> emb = TokenEmbedding(vocab_size=10, d_model=4)
        >>> emb.build()
        >>> emb.enable_lora(2, lora_alpha=2)
        >>> _ = emb.lora_embeddings_a.assign(np.ones((10, 2), "float32"))
        >>> looked_up = keras.ops.convert_to_numpy(emb(np.array([[1, 2]])))
        >>> emb.merge_lora()
        >>> bool(np.allclose(keras.ops.convert_to_numpy(emb(np.array([[1, 2]]))), looked_up, atol=1e-6))
        True
    """

    lora_enabled = False

    def enable_lora(self, rank, lora_alpha=None, lora_dropout: float = 0.0):
        """Add a rank-``rank`` adapter to the lookup and freeze the table.

        Args:
            rank: the adapter's rank r.
            lora_alpha: the update is scaled by ``lora_alpha / rank``; None: ``rank``.
            lora_dropout: must be 0: PEFT applies no dropout to embedding adapters, nor do we.

        Returns:
            None.
        """
        alpha = check_lora_settings(rank, lora_alpha, lora_dropout)
        if lora_dropout:
            raise ValueError(f"lora_dropout={lora_dropout} cannot apply to an embedding adapter (PEFT's "
                             "lora.Embedding has no dropout either)")
        if self.lora_enabled:
            raise ValueError(f"{self.name} already has a LoRA adapter")
        self._tracker.unlock()  # Keras locks a built layer's weights; Dense.enable_lora unlocks the same way
        self.lora_embeddings_a = self.add_weight(name="lora_embeddings_a", shape=(self.vocab_size, rank),
                                                 initializer="zeros", dtype="float32")
        self.lora_embeddings_b = self.add_weight(name="lora_embeddings_b", shape=(rank, self.d_model),
                                                 initializer="he_uniform", dtype="float32")
        self._tracker.lock()
        self.embeddings.trainable = False
        self.lora_enabled, self.lora_rank, self.lora_alpha = True, rank, alpha

    @property
    def lora_scale(self) -> float:
        """``lora_alpha / lora_rank``, the factor of the adapter's update."""
        return self.lora_alpha / self.lora_rank

    def lora_lookup(self, token_ids, looked_up):
        """``looked_up`` (the table's rows for ``token_ids``) plus the adapter's update, when there is one."""
        if not self.lora_enabled:
            return looked_up
        rows = ops.take(self.lora_embeddings_a, ops.cast(token_ids, "int32"), axis=0)
        update = ops.matmul(rows, self.lora_embeddings_b) * self.lora_scale
        return looked_up + ops.cast(update, looked_up.dtype)

    def save_own_variables(self, store):
        """Keras' ``.keras`` saving: the plain table; refused while an adapter is on (see the message)."""
        if self.lora_enabled:
            raise ValueError(f"{self.name}: a .keras file holds plain weights (Keras merges Dense adapters into "
                             "their kernels when saving), but an embedding adapter changes the lookup only and cannot "
                             "be merged into a table the output projection also reads; save the adapter with "
                             "save_pretrained (PEFT's format) or target no embeddings")
        super().save_own_variables(store)

    def merge_lora(self) -> None:
        """Fold the adapter into the table (``E + (alpha / r) A B``), remove it and unfreeze the table."""
        if not self.lora_enabled:
            return
        merged = ops.add(self.embeddings,
                         self.lora_scale * ops.matmul(self.lora_embeddings_a, self.lora_embeddings_b))
        self.embeddings.assign(ops.cast(merged, self.embeddings.dtype))
        drop_adapter(self, ("lora_embeddings_a", "lora_embeddings_b"))
        self.embeddings.trainable = True
