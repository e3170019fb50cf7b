"""Section 5.4: the label-smoothed cross-entropy and the token accuracy, over labels that are not ``-100``.

The causal-LM variants compare the logits at position t with the label at t + 1, as transformers'
``*ForCausalLM`` losses do. Every loss here returns the mean over counted tokens.
"""

from __future__ import annotations

import keras
from keras import ops

from .distribution import scale_loss_for_replicas

IGNORE_INDEX = -100  # transformers' convention for label positions excluded from loss and metrics


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy with label smoothing over token positions whose label is not ``ignore_index``.

    The smoothed target is (1 - eps) on the true class plus eps / V on every class (section 5.4, eps=0.1),
    the same definition as ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``. The result is the mean over
    counted tokens: ``y_true (batch, seq)``, ``y_pred`` logits ``(batch, seq, vocab)`` -> scalar.

    Args:
        label_smoothing: eps (0.1 in the paper; "hurts perplexity ... but improves accuracy and BLEU").
        ignore_index: label value of positions left out (padding), -100 as in transformers.
        name: the loss name.

    Example:
        >>> from vanilla_transformer.losses import MaskedSparseCrossEntropy
        >>> loss = MaskedSparseCrossEntropy(label_smoothing=0.1)
        >>> labels = np.array([[1, 2, -100]])  # (batch, seq); the -100 position is not counted
        >>> round(float(loss(labels, np.zeros((1, 3, 4), "float32"))), 4)  # uniform over V=4: log(4)
        1.3863
        >>> logits = 10 * np.eye(4, dtype="float32")[[[1, 2, 0]]]  # (1, 3, 4): confident, right where counted
        >>> round(float(MaskedSparseCrossEntropy(label_smoothing=0.0)(labels, logits)), 4)
        0.0001
        >>> round(float(loss(labels, logits)), 4)  # smoothing penalises the over-confident prediction
        0.7501
    """

    def __init__(self, label_smoothing: float = 0.1, ignore_index: int = IGNORE_INDEX,
                 name="masked_sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        logits = ops.cast(y_pred, "float32")
        ignored = ops.equal(y_true, self.ignore_index)
        mask = ops.cast(ops.logical_not(ignored), "float32")
        eps = self.label_smoothing
        # -sum_v target_v log p_v with target = (1 - eps) one_hot + eps / V, and sum_v target_v = 1:
        # logsumexp(logits) - sum_v target_v logits_v. Written with a one-hot product rather than a gather
        # because the gradient of a gather is a scatter-add (slow on CPU without XLA); the gradient here is
        # softmax - target, elementwise.
        target = (1.0 - eps) * ops.one_hot(ops.where(ignored, 0, y_true), logits.shape[-1]) + eps / logits.shape[-1]
        per_token = ops.logsumexp(logits, axis=-1) - ops.sum(logits * target, axis=-1)
        return scale_loss_for_replicas(ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0))

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Share of tokens whose argmax equals the label, counting only labels != ``ignore_index``.

    ``y_true (batch, seq)`` labels, ``y_pred (batch, seq, vocab)`` logits or probabilities; the result is a
    scalar in [0, 1], accumulated over batches until ``reset_state``.

    Args:
        ignore_index: label value of positions left out (padding).
        name: the metric name.

    Example:
        >>> from vanilla_transformer.losses import MaskedAccuracy
        >>> metric = MaskedAccuracy()
        >>> logits = np.eye(4, dtype="float32")[[[1, 3, 0]]]  # argmax 1 (right), 3 (wrong), 0 (ignored)
        >>> metric.update_state(np.array([[1, 2, -100]]), logits)
        >>> float(metric.result())
        0.5
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(y_true, self.ignore_index), "float32")
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
        self.correct.assign_add(ops.sum(hits * mask))
        self.total.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class CausalLMLoss(MaskedSparseCrossEntropy):
    """Next-token cross-entropy: ``logits[:, :-1]`` against ``labels[:, 1:]``, ignoring -100.

    ``y_true`` are the unshifted labels ``(batch, seq)`` (:class:`DataCollatorForCausalLM`), ``y_pred`` the
    logits ``(batch, seq, vocab)``; the result is the mean over counted tokens, so ``exp(loss)`` is the
    perplexity of the batch. Label smoothing is 0 unless given (same definition as the paper's loss).

    Args:
        label_smoothing: eps, as for :class:`MaskedSparseCrossEntropy`.
        ignore_index: label value of positions left out.
        name: the loss name.

    Example:
        >>> from vanilla_transformer.losses import CausalLMLoss
        >>> labels = np.array([[3, 5, 7, 9]])  # (batch, seq), unshifted
        >>> round(float(CausalLMLoss()(labels, np.zeros((1, 4, 20), "float32"))), 4)  # uniform: log(20)
        2.9957
        >>> logits = 20 * np.eye(20, dtype="float32")[[[5, 7, 9, 0]]]  # position t predicts label t + 1
        >>> round(float(CausalLMLoss()(labels, logits)), 4)
        0.0
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX, name="causal_lm_loss",
                 **kwargs):
        super().__init__(label_smoothing=label_smoothing, ignore_index=ignore_index, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return super().call(y_true[:, 1:], y_pred[:, :-1])


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class CausalLMAccuracy(MaskedAccuracy):
    """Next-token accuracy: argmax of ``logits[:, :-1]`` against ``labels[:, 1:]``, ignoring -100.

    ``y_true`` unshifted labels ``(batch, seq)``, ``y_pred`` logits ``(batch, seq, vocab)``; arguments as for
    :class:`MaskedAccuracy`.

    Example:
        >>> from vanilla_transformer.losses import CausalLMAccuracy
        >>> metric = CausalLMAccuracy()
        >>> logits = np.eye(20, dtype="float32")[[[5, 7, 0, 0]]]  # right, right, wrong, (last: no next token)
        >>> metric.update_state(np.array([[3, 5, 7, 9]]), logits)
        >>> round(float(metric.result()), 4)
        0.6667
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true[:, 1:], y_pred[:, :-1], sample_weight)


