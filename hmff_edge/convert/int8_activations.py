"""hard_swish in full-integer TFLite: a spelling whose every op XNNPACK takes, with the
constant ``1/6`` folded into the weights of the layers that read the activation.

LiteRT's XNNPACK delegate (2.3) takes neither int8 ``HARD_SWISH`` nor int8 ``MINIMUM``: each
such op runs in the reference kernel between two delegate partitions (an int8
hmff-mobilenet-16ch-hs in the ``x * clip(x / 6 + 1/2, 0, 1)`` spelling has 35 partitions).
``x * relu6(x + 3)`` is two int8 ops the delegate takes (``ADD`` with ``RELU6`` fused,
``MUL``), and ``hard_swish(x)`` is that divided by 6. The converter fuses any spelling that
multiplies that product by ``1/6`` back into ``HARD_SWISH``, and ``(x / 6) * relu6(x + 3)``
pays a third pass (a scalar ``MUL`` as slow as the product), so the ``1/6`` goes into the
consumers instead:

* the activation's output tensor carries a scale: it holds ``s * true value`` (``s = 6`` for
  a folded hard_swish of a true input);
* linear layers without weights pass the scale on (Add and Concatenate when every input
  carries the same scale, pooling, dropout, reshapes, the channel interleave);
* layers with weights absorb it: a convolution or Dense kernel is divided by ``s`` (bias
  unchanged), a batch normalization reads ``s`` times its moving mean, ``s^2`` times its
  moving variance and epsilon: the same function of the true input, exact in real
  arithmetic and equal in float32 up to rounding;
* a hard_swish whose input carries ``s`` first divides it back (``x * relu6(x / s + 3)``,
  output scale ``6 s``).

Anything else (an unknown layer, a model output, a join of unequal scales) needs the true
value: the hard_swish layers feeding it are left unfolded, spelled
``(x / 6) * relu6(x + 3)`` (three passes, still one partition), and the propagation runs
again until every tensor is consistent. A model that is not one flat functional graph gets
the unfolded spelling everywhere.

Float exports keep Keras' hard_swish, a single delegated ``HARD_SWISH`` op in fp32.
"""

from __future__ import annotations

from typing import Any

from hmff_edge._lazy import keras as _keras
from hmff_edge._lazy import require

FOLDED = "x * relu6(x + 3), 1/6 folded into the next weights"
UNFOLDED = "(x / 6) * relu6(x + 3)"

# Weightless layers for which f(s * x) = s * f(x), s > 0 (inputs of a join must agree on s).
_LINEAR = ("Add", "Concatenate", "Average", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
           "AveragePooling1D", "AveragePooling2D", "MaxPooling1D", "MaxPooling2D",
           "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Dropout", "SpatialDropout2D",
           "Reshape", "Flatten", "ZeroPadding2D", "Identity")


def is_hard_swish(layer: Any) -> bool:
    keras = _keras()
    return (isinstance(layer, keras.layers.Activation)
            and getattr(layer.activation, "__name__", "") in ("hard_swish", "hard_silu"))


def _absorbs(layer: Any) -> bool:
    """A single-input layer whose weights can take a positive input scale."""
    keras = _keras()
    from hmff_edge.models.layers import GroupedPointwiseConv2D

    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    if isinstance(layer, keras.layers.SeparableConv2D):
        return True
    return (isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                               keras.layers.DepthwiseConv2D, keras.layers.Dense,
                               GroupedPointwiseConv2D))
            and getattr(layer, "lora_enabled", False) is False)


def _linear(layer: Any) -> bool:
    keras = _keras()
    from hmff_edge.models.layers import ChannelInterleave

    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") == "linear"
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None and not layer.negative_slope and not layer.threshold)
    kinds = tuple(c for c in (getattr(keras.layers, n, None) for n in _LINEAR) if c is not None)
    return isinstance(layer, (*kinds, ChannelInterleave))


def _flat_graph(model: Any) -> list[tuple[Any, list, list]] | None:
    """``(layer, input tensors, output tensors)`` in topological order, or None when the
    model is not one flat functional graph of layers called once each."""
    keras = _keras()
    ops = getattr(model, "operations", None)
    if not isinstance(model, keras.Model) or ops is None or not getattr(model, "outputs", None):
        return None
    graph = []
    for op in ops:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if isinstance(op, keras.Model) or len(getattr(op, "_inbound_nodes", ())) != 1:
            return None
        node = op._inbound_nodes[0]
        graph.append((op, list(node.input_tensors), list(node.output_tensors)))
    return graph


def _propagate(graph, folded: set[int], outputs) -> tuple[dict[int, float], dict[int, float], list]:
    """Scale of every tensor for the ``folded`` hard_swish layers; input scale of every
    hard_swish and absorbing layer; tensors that must carry scale 1 but do not (or feed a
    join of unequal scales)."""
    scale: dict[int, float] = {}
    in_scale: dict[int, float] = {}
    bad = []
    for layer, ins, outs in graph:
        s = [scale.get(id(t), 1.0) for t in ins]
        if is_hard_swish(layer) and len(ins) == 1:
            in_scale[id(layer)] = s[0]
            out = 6.0 * s[0] if id(layer) in folded else 1.0
        elif len(ins) == 1 and _absorbs(layer):
            in_scale[id(layer)] = s[0]
            out = 1.0
        elif _linear(layer) and s:
            if len(set(s)) > 1:
                bad += ins
            out = s[0]
        else:
            bad += [t for t, v in zip(ins, s) if v != 1.0]
            out = 1.0
        for t in outs:
            scale[id(t)] = out
    bad += [t for t in outputs if scale.get(id(t), 1.0) != 1.0]
    return scale, in_scale, bad


def _folded_sources(tensors, producer: dict[int, tuple[Any, list]], folded: set[int]) -> set[int]:
    """The folded hard_swish layers whose scale reaches ``tensors`` through linear layers."""
    found, stack, seen = set(), list(tensors), set()
    while stack:
        t = stack.pop()
        if id(t) in seen or id(t) not in producer:
            continue
        seen.add(id(t))
        layer, ins = producer[id(t)]
        if id(layer) in folded:
            found.add(id(layer))
        elif _linear(layer):
            stack += ins
    return found


def _spelling(in_scale: float, folded: bool):
    """hard_swish of ``x / in_scale``, times ``6 * in_scale`` when ``folded``."""
    tf = require("tensorflow")

    def hard_swish_int8(x):
        z = x if in_scale == 1.0 else x * (1.0 / in_scale)
        gate = tf.nn.relu6(z + 3.0)
        if folded:
            return x * gate
        return (x * (1.0 / (6.0 * in_scale))) * gate

    hard_swish_int8.__name__ = "hard_swish_int8_folded" if folded else "hard_swish_int8"
    return hard_swish_int8


def _absorb(layer: Any, s: float) -> None:
    """Make ``layer`` compute on an input that carries scale ``s`` what it computed before."""
    keras = _keras()
    ops = keras.ops
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.moving_mean.assign(ops.multiply(layer.moving_mean, s))
        layer.moving_variance.assign(ops.multiply(layer.moving_variance, s * s))
        layer.epsilon = float(layer.epsilon) * s * s
        return
    kernel = (layer.depthwise_kernel if isinstance(layer, keras.layers.SeparableConv2D)
              else layer.kernel)
    kernel.assign(ops.multiply(kernel, 1.0 / s))


def rewrite_hard_swish(model: Any) -> dict | None:
    """Respell every hard_swish of ``model`` in place for int8 (see module doc) and fold the
    ``1/6`` scales into the layers that read them. Returns what was done, for the artifact's
    metadata, or None when the model has no hard_swish."""
    acts = [layer for layer in model._flatten_layers() if is_hard_swish(layer)]
    if not acts:
        return None
    graph = _flat_graph(model)
    folded: set[int] = set()
    in_scale: dict[int, float] = {}
    if graph is not None:
        producer = {id(t): (layer, ins) for layer, ins, outs in graph for t in outs}
        folded = {id(a) for a in acts}
        while True:
            _, in_scale, bad = _propagate(graph, folded, model.outputs)
            undo = _folded_sources(bad, producer, folded)
            if not bad:
                break
            if not undo:  # a scale no hard_swish of ours put there: fold nothing
                folded = set()
                _, in_scale, bad = _propagate(graph, folded, model.outputs)
                break
            folded -= undo
    absorbed = {}
    for layer in model._flatten_layers():
        s = in_scale.get(id(layer), 1.0)
        if is_hard_swish(layer):
            layer.activation = _spelling(s, id(layer) in folded)
        elif s != 1.0:
            _absorb(layer, s)
            absorbed[layer.name] = s
    unfolded = sorted(a.name for a in acts if id(a) not in folded)
    return {"hard_swish": {"folded": len(acts) - len(unfolded), "unfolded": len(unfolded),
                           "spelling_folded": FOLDED, "spelling_unfolded": UNFOLDED,
                           "unfolded_layers": unfolded,
                           "scales_absorbed_by": dict(sorted(absorbed.items()))}}
