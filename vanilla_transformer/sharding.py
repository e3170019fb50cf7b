"""Scale-out with ``keras.distribution``: data parallelism and Megatron-style tensor parallelism.

:func:`layout_map` says how each weight is split across the ``"model"`` axis of a device mesh (Shoeybi et
al., 2019, "Megatron-LM", section 3): in every attention block the Q/K/V projections are split by output
column, so each device holds whole heads, and the output projection by input row; in every feed-forward
block the first kernel is split by column (``d_ff``), the second by row. Each block then needs one
all-reduce forward and one backward; embeddings, layer norms and heads stay replicated.
:func:`make_distribution` builds the ``keras.distribution`` object a run asks for by name.

Both are plain ``keras.distribution`` objects; Keras 3 runs them on JAX (TensorFlow has ``tf.distribute``,
see :mod:`vanilla_transformer.distribution`).
"""

from __future__ import annotations

import keras

BATCH_AXIS = "batch"
MODEL_AXIS = "model"
DISTRIBUTIONS = ("data_parallel", "model_parallel", "none")


def megatron_layouts(model_axis: str = MODEL_AXIS) -> dict[str, tuple]:
    """The sharding rules: a regular expression over ``variable.path`` -> the axes of that weight.

    Dense kernels are ``(in, out)``: column-parallel kernels are split on ``out`` (their bias with them),
    row-parallel kernels on ``in`` (their bias stays whole, added once after the all-reduce).

    Args:
        model_axis: the device-mesh axis the weights are split over.

    Returns:
        ``{pattern: axes}``, in the form ``keras.distribution.LayoutMap`` takes (patterns match whole paths,
        e.g. ``TransformerForSeq2SeqLM/decoder/layers_0/cross_attn/k_proj/kernel``).

    Example:
        >>> from vanilla_transformer.sharding import megatron_layouts
        >>> for pattern, axes in megatron_layouts().items():
        ...     print(f"{pattern:30} {axes}")
        .*_attn/[qkv]_proj/kernel      (None, 'model')
        .*_attn/[qkv]_proj/bias        ('model',)
        .*_attn/o_proj/kernel          ('model', None)
        .*feed_forward/fc1/kernel      (None, 'model')
        .*feed_forward/fc1/bias        ('model',)
        .*feed_forward/fc2/kernel      ('model', None)
    """
    column, row = (None, model_axis), (model_axis, None)
    return {
        r".*_attn/[qkv]_proj/kernel": column,  # W^Q, W^K, W^V: heads split across devices
        r".*_attn/[qkv]_proj/bias": (model_axis,),
        r".*_attn/o_proj/kernel": row,  # W^O: each device multiplies its heads' slice
        r".*feed_forward/fc1/kernel": column,  # W_1: d_ff split across devices
        r".*feed_forward/fc1/bias": (model_axis,),
        r".*feed_forward/fc2/kernel": row,  # W_2: the partial sums are all-reduced
    }


def _axis_size(device_mesh, axis: str) -> int:
    if axis not in device_mesh.axis_names:
        raise ValueError(f"the device mesh has no axis {axis!r} to split the weights over; its axes are "
                         f"{list(device_mesh.axis_names)}")
    return device_mesh.shape[list(device_mesh.axis_names).index(axis)]


def layout_map(config_or_model, device_mesh, model_axis: str = MODEL_AXIS) -> keras.distribution.LayoutMap:
    """A ``LayoutMap`` that shards every attention and feed-forward kernel over ``model_axis`` (Megatron).

    Pass it to ``keras.distribution.ModelParallel``; weights it does not name are replicated. Each device
    holds ``num_heads / n`` whole heads and ``d_ff / n`` columns of the feed-forward layer (``n`` devices on
    ``model_axis``), so both must divide evenly.

    Args:
        config_or_model: a :class:`~vanilla_transformer.TransformerConfig`, or a model (its ``config``).
        device_mesh: a ``keras.distribution.DeviceMesh`` with a ``model_axis`` (e.g. axes
            ``("batch", "model")``: data parallelism across the first, tensor parallelism across the second).
        model_axis: the name of the mesh axis the weights are split over.

    Returns:
        A ``keras.distribution.LayoutMap`` with the rules of :func:`megatron_layouts`.

    Raises:
        ValueError: the mesh lacks ``model_axis``, or ``num_heads`` or ``d_ff`` does not split evenly over it.

    Example:
        >>> from vanilla_transformer import TransformerConfig
        >>> from vanilla_transformer.sharding import layout_map
        >>> config = TransformerConfig.from_preset("transformer-big")  # 16 heads, d_ff 4096
        >>> mesh = keras.distribution.DeviceMesh((1, 4), ("batch", "model"), devices=[f"cpu:{i}" for i in range(4)])
        >>> layouts = layout_map(config, mesh)
        >>> layouts["TransformerForSeq2SeqLM/encoder/layers_5/self_attn/q_proj/kernel"].axes
        (None, 'model')
        >>> layouts["TransformerForSeq2SeqLM/decoder/layers_0/feed_forward/fc2/kernel"].axes
        ('model', None)
        >>> print(layouts["TransformerForSeq2SeqLM/shared/embeddings"])  # not named: replicated
        None
        >>> mesh = keras.distribution.DeviceMesh((3,), ("model",), devices=["cpu:0", "cpu:1", "cpu:2"])
        >>> layout_map(config, mesh)
        Traceback (most recent call last):
        ...
        ValueError: num_heads=16 does not split evenly over the 3 devices of mesh axis 'model'
    """
    config = getattr(config_or_model, "config", config_or_model)
    shards = _axis_size(device_mesh, model_axis)
    for name in ("num_heads", "d_ff"):
        if getattr(config, name) % shards:
            raise ValueError(f"{name}={getattr(config, name)} does not split evenly over the {shards} devices of "
                             f"mesh axis {model_axis!r}")
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in megatron_layouts(model_axis).items():
        layouts[pattern] = axes
    return layouts


def make_distribution(kind: str, config_or_model=None, devices=None, model_shards: int | None = None):
    """The ``keras.distribution`` a run asks for by name, over ``devices`` (default: all of them).

    - ``"data_parallel"``: ``keras.distribution.DataParallel``: weights replicated, every batch split by
      rows (the row count must divide by the number of devices). The loss is one program over the whole
      batch, so its token mean and the gradients are those of one device on the same batch.
    - ``"model_parallel"``: ``keras.distribution.ModelParallel`` with :func:`layout_map` over a
      ``("batch", "model")`` mesh of ``len(devices) // model_shards`` by ``model_shards`` devices.
    - ``"none"``: ``None`` (Keras' default placement: one device).

    Set the result with ``keras.distribution.set_distribution`` (or enter its ``scope()``) before building
    the model, so that its weights are created where they belong.

    Args:
        kind: one of :data:`DISTRIBUTIONS`.
        config_or_model: the model's config (or the model); needed by ``"model_parallel"``.
        devices: device names as ``keras.distribution.list_devices()`` gives them.
        model_shards: devices a weight is split over under ``"model_parallel"`` (default: all).

    Returns:
        A ``keras.distribution.Distribution``, or None for ``"none"``.

    Raises:
        ValueError: an unknown ``kind``, a backend other than JAX, or devices that do not fit.

    Example:
        >>> from vanilla_transformer.sharding import make_distribution
        >>> print(make_distribution("none"))
        None
        >>> make_distribution("pipeline_parallel")
        Traceback (most recent call last):
        ...
        ValueError: unknown distribution 'pipeline_parallel'; choose one of data_parallel, model_parallel, none
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if kind == "none":
        return None
    if keras.backend.backend() != "jax":
        raise ValueError(f"keras.distribution ({kind}) runs on the JAX backend, not on "
                         f"{keras.backend.backend()}; on TensorFlow use tf.distribute")
    devices = list(devices or keras.distribution.list_devices())
    if kind == "data_parallel":
        return keras.distribution.DataParallel(devices=devices)
    if config_or_model is None:
        raise ValueError("model_parallel needs the model's config to check that its heads and d_ff split evenly")
    model_shards = model_shards or len(devices)
    if len(devices) % model_shards:
        raise ValueError(f"model_shards={model_shards} does not divide the {len(devices)} devices")
    mesh = keras.distribution.DeviceMesh((len(devices) // model_shards, model_shards), (BATCH_AXIS, MODEL_AXIS),
                                         devices=devices)
    return keras.distribution.ModelParallel(layout_map=layout_map(config_or_model, mesh), batch_dim_name=BATCH_AXIS)
