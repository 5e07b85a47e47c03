"""Rebuild a trained float Keras model as its quantization-aware twin (same weights).

Walks the functional graph once, in dependency order, and maps each float layer to:

* conv-like layer (Conv2D, DepthwiseConv2D incl. the padding-aware one, the grouped 1x1,
  Dense) followed by its only consumer, a BatchNormalization -> one :class:`QuantConvBN`
  (BN folded); a BN with no convolution before it (HMFF's concat BN) -> a 1x1 depthwise
  ``QuantConvBN`` holding the BN (per-channel weights in int8, not one scale for a MUL);
* activation -> :class:`QuantActivation`; Dense's softmax -> logits + softmax on its grid;
* every tensor the int8 graph requantizes -> a :class:`FakeQuant` after it (the input, each
  convolution not followed by a ReLU (which TFLite fuses into it), each activation, add,
  concat and pool);
* Dropout and a standalone ChannelInterleave are copied (no new quantization).

Anything else raises :class:`UnsupportedLayerError` naming the layer and its class, before
anything is built.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hmff_edge._lazy import keras as _keras
from hmff_edge.errors import ConfigError
from hmff_edge.quant.fakequant import FakeQuant
from hmff_edge.quant.layers import QuantActivation, QuantConvBN

keras = _keras()
L = keras.layers


class UnsupportedLayerError(ConfigError):
    """The model has a layer (class named in the message) that QAT cannot rebuild."""


_ACT_NAMES = {"silu": "swish", "swish": "swish", "hard_silu": "hard_swish",
              "hard_swish": "hard_swish", "relu": "relu", "relu6": "relu6",
              "softmax": "softmax", "linear": "linear"}


def activation_kind(layer) -> str | None:
    """The :data:`~hmff_edge.quant.layers.ACTIVATIONS` name of an activation layer."""
    if isinstance(layer, L.ReLU):
        if float(layer.negative_slope or 0) != 0 or float(layer.threshold or 0) != 0:
            return None
        mv = layer.max_value
        return "relu" if mv is None else ("relu6" if float(mv) == 6.0 else None)
    if isinstance(layer, L.Activation):
        return _ACT_NAMES.get(getattr(layer.activation, "__name__", ""))
    return None


def _fn_activation(layer) -> str | None:
    return _ACT_NAMES.get(getattr(getattr(layer, "activation", None), "__name__", "linear"))


def _is_conv_like(layer) -> bool:
    from hmff_edge.models.layers import GroupedPointwiseConv2D

    if isinstance(layer, GroupedPointwiseConv2D):
        return True
    if isinstance(layer, L.DepthwiseConv2D):
        return layer.data_format == "channels_last" and _fn_activation(layer) == "linear"
    if isinstance(layer, L.Conv2D):
        return (layer.groups == 1 and layer.data_format == "channels_last"
                and _fn_activation(layer) == "linear")
    if isinstance(layer, L.Dense):
        return _fn_activation(layer) in ("linear", "softmax")
    return False


_COPIED = (L.Dropout, L.InputLayer)


def unsupported_layers(model) -> list[str]:
    """``"name (Class)"`` for every layer :func:`quantize_model` cannot rebuild."""
    from hmff_edge.models.layers import ChannelInterleave

    bad = []
    for layer in model.layers:
        ok = (_is_conv_like(layer) or isinstance(layer, L.BatchNormalization)
              or activation_kind(layer) is not None
              or isinstance(layer, (L.Add, L.Concatenate, L.GlobalAveragePooling2D,
                                    ChannelInterleave, *_COPIED)))
        if isinstance(layer, L.BatchNormalization) and layer.axis not in (-1, 3, [-1], [3]):
            ok = False
        if ok and len(layer._inbound_nodes) > 1:
            ok = False  # a shared layer: one weight set used at two places
        if not ok:
            bad.append(f"{layer.name} ({type(layer).__name__})")
    return bad


def check_supported(model) -> None:
    """Raise :class:`UnsupportedLayerError` naming every layer QAT cannot rebuild."""
    bad = unsupported_layers(model)
    if bad:
        raise UnsupportedLayerError(
            f"quantization-aware training does not support {len(bad)} layer(s) of this model: "
            + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
            + "; supported: Conv2D, DepthwiseConv2D, the zoo's grouped/padding-aware layers, "
            "BatchNormalization, swish/hard_swish/relu/relu6/softmax activations, Add, "
            "Concatenate, GlobalAveragePooling2D, Dense, Dropout")


@dataclass
class _Graph:
    """Consumers of each tensor, and which conv+BN pairs fold."""

    consumers: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    folds: dict[str, Any] = field(default_factory=dict)  # BN layer name -> conv layer
    folded_convs: set[str] = field(default_factory=set)
    momentum: float = 0.99  # of the activation quantizers' moving averages


def _analyse(model) -> _Graph:
    g = _Graph()
    producer = {}
    for layer in model.layers:
        node = layer._inbound_nodes[0]
        for t in node.output_tensors:
            producer[id(t)] = layer
        for t in node.input_tensors:
            g.consumers[id(t)].append(layer)
    for t in model.outputs:
        g.consumers[id(t)].append(None)
    for layer in model.layers:
        if not isinstance(layer, L.BatchNormalization):
            continue
        (t,) = layer._inbound_nodes[0].input_tensors
        conv = producer.get(id(t))
        if (conv is not None and _is_conv_like(conv) and not isinstance(conv, L.Dense)
                and len(g.consumers[id(t)]) == 1):
            g.folds[layer.name] = conv
            g.folded_convs.add(conv.name)
    return g


def _conv_spec(conv, input_shape) -> dict:
    from hmff_edge.models.layers import GroupedPointwiseConv2D, PaddingAwareDepthwiseConv2D

    if isinstance(conv, GroupedPointwiseConv2D):
        return {"kind": "grouped", "groups": conv.groups,
                "interleave_input": conv.interleave_input}
    if isinstance(conv, L.Dense):
        return {"kind": "dense", "use_bias": conv.use_bias}
    common = {"strides": conv.strides, "padding": conv.padding,
              "dilation": conv.dilation_rate, "use_bias": conv.use_bias}
    if isinstance(conv, L.DepthwiseConv2D):
        centre = (isinstance(conv, PaddingAwareDepthwiseConv2D)
                  and conv.centre_tap_only(input_shape))
        return {"kind": "depthwise", "centre_tap": bool(centre), **common}
    return {"kind": "conv", **common}


def _fused_relu_follows(g: _Graph, out_tensor) -> bool:
    """The tensor's only consumer is a ReLU/ReLU6 (TFLite fuses it into the conv)."""
    cons = g.consumers[id(out_tensor)]
    return len(cons) == 1 and cons[0] is not None and activation_kind(cons[0]) in ("relu",
                                                                                    "relu6")


def quantize_model(model, *, momentum: float = 0.99,
                   input_range: tuple[float, float] | None = None):
    """The QAT twin of a trained float functional ``model`` (weights copied, BN folded).

    ``input_range`` fixes the input's quantization range (see
    :func:`hmff_edge.quant.fakequant.input_range`); otherwise it is learned like the rest.
    Activation ranges start at zero: call :func:`hmff_edge.quant.fakequant.observe_ranges`
    on calibration batches before training or evaluating it. Raises
    :class:`UnsupportedLayerError` for layers it cannot rebuild.
    """
    check_supported(model)
    g = _analyse(model)
    g.momentum = momentum
    new: dict[int, Any] = {}  # id(float tensor) -> QAT tensor
    weights: list[tuple[Any, list]] = []
    shared: dict[str, Any] = {}  # concat name -> its quantizer, shared with its inputs

    def quantizer(name):
        return FakeQuant(momentum=momentum, name=f"{name}_quant")

    def output(out_t, y, name):
        """``y`` quantized as the int8 graph stores float tensor ``out_t``."""
        concat = next((c for c in g.consumers[id(out_t)]
                       if c is not None and isinstance(c, L.Concatenate)), None)
        if concat is None:
            return quantizer(name)(y)
        fq = shared.setdefault(concat.name, quantizer(concat.name))
        return fq(y, track=False)

    inputs = []
    input_layers = [layer for layer in model.layers if isinstance(layer, L.InputLayer)]
    for t, layer in zip(model.inputs, input_layers):
        inp = keras.Input(shape=t.shape[1:], name=layer.name, dtype=t.dtype)
        inputs.append(inp)
        new[id(t)] = FakeQuant(momentum=momentum, value_range=input_range,
                               name="input_quant")(inp)
    for layer in model.layers:
        node = layer._inbound_nodes[0]
        if isinstance(layer, L.InputLayer) or layer.name in g.folded_convs:
            continue
        src = g.folds.get(layer.name, layer)
        ins = [new[id(t)] for t in src._inbound_nodes[0].input_tensors]
        (out_t,) = node.output_tensors
        y, name = _rebuild(layer, ins, out_t, g, weights)
        if isinstance(layer, L.Concatenate):
            y = shared.setdefault(layer.name, quantizer(layer.name))(y)
        elif name is not None:
            y = output(out_t, y, name)
        new[id(out_t)] = y
    qmodel = keras.Model(inputs, [new[id(t)] for t in model.outputs], name=f"{model.name}_qat")
    for qlayer, values in weights:
        qlayer.set_weights(values)
    return qmodel


def _rebuild(layer, ins, out_t, g: _Graph, weights):
    """The QAT layers for one float layer applied to ``ins``: ``(tensor, name)``, where
    ``name`` names the quantizer the output still needs, or is None when it needs none
    (a ReLU TFLite fuses into the conv follows; a fixed-grid softmax; a copied layer)."""
    from hmff_edge.models.layers import ChannelInterleave

    x = ins[0]
    if isinstance(layer, L.BatchNormalization):
        conv = g.folds.get(layer.name)
        bn_w = [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
        if conv is not None:
            (conv_in,) = conv._inbound_nodes[0].input_tensors
            spec = _conv_spec(conv, conv_in.shape)
            conv_w = [conv.kernel] + ([conv.bias] if spec.get("use_bias") else [])
            q = QuantConvBN(kernel_shape=conv.kernel.shape, epsilon=layer.epsilon,
                            name=conv.name, **spec)
            values = [v.numpy() for v in conv_w + bn_w]
        else:  # BN alone: a 1x1 depthwise of ones with the BN folded into it
            c = int(layer.gamma.shape[0])
            q = QuantConvBN("depthwise", (1, 1, c, 1), padding="valid", epsilon=layer.epsilon,
                            name=f"{layer.name}_affine")
            values = [np.ones((1, 1, c, 1), np.float32)] + [v.numpy() for v in bn_w]
        weights.append((q, values))
        return q(x), None if _fused_relu_follows(g, out_t) else q.name
    if _is_conv_like(layer):  # a convolution without BN after it (or the classifier)
        spec = _conv_spec(layer, x.shape)
        q = QuantConvBN(kernel_shape=layer.kernel.shape, use_bn=False, name=layer.name,
                        **spec)
        y = q(x)
        weights.append((q, [v.numpy() for v in [layer.kernel]
                            + ([layer.bias] if spec.get("use_bias") else [])]))
        if _fn_activation(layer) == "softmax":
            y = FakeQuant(momentum=g.momentum, name=f"{layer.name}_logits_quant")(y)
            return QuantActivation("softmax", name=f"{layer.name}_softmax")(y), None
        return y, None if _fused_relu_follows(g, out_t) else layer.name
    kind = activation_kind(layer)
    if kind == "hard_swish":  # (x / 6) * relu6(x + 3): each factor is a requantized tensor
        parts = [FakeQuant(momentum=g.momentum, name=f"{layer.name}_{k}_quant")(
                     QuantActivation(k, name=f"{layer.name}_{k}")(x))
                 for k in ("sixth", "relu6_plus_3")]
        return L.Multiply(name=layer.name)(parts), layer.name
    if kind is not None:
        y = QuantActivation(kind, name=layer.name)(x)
        return y, None if kind == "softmax" else layer.name
    if isinstance(layer, (L.Add, L.Concatenate, L.GlobalAveragePooling2D)):
        clone = type(layer).from_config(layer.get_config())
        return clone(ins if isinstance(layer, (L.Add, L.Concatenate)) else x), layer.name
    if isinstance(layer, (L.Dropout, ChannelInterleave)):
        return type(layer).from_config(layer.get_config())(x), None
    raise UnsupportedLayerError(f"{layer.name} ({type(layer).__name__})")  # pragma: no cover


def _input_quantizer(layer) -> FakeQuant | None:
    """The :class:`FakeQuant` whose grid ``layer``'s input lies on (through copied layers,
    which keep the grid: an interleave, a dropout)."""
    from hmff_edge.models.layers import ChannelInterleave

    (t,) = layer._inbound_nodes[0].input_tensors
    while True:
        producer = t._keras_history.operation
        if isinstance(producer, FakeQuant):
            return producer
        if not isinstance(producer, (ChannelInterleave, L.Dropout)):
            return None
        (t,) = producer._inbound_nodes[0].input_tensors


def snap_biases(qmodel) -> int:
    """Put every folded bias of ``qmodel`` on its int32 grid (scale input scale x weight
    scale, per output channel), as the int8 file stores it; returns the layers changed.

    The converter rounds each bias to that grid; a QAT model whose biases lie between
    points computes slightly different sums than its int8 file, and a sum that lands on the
    other side of a rounding boundary sends a one-step difference through every later layer.
    Moves ``beta`` (or the bias of a layer without BN) by the rounding, at most half a grid
    step: a change of at most 1/1000 of an output step on typical scales.
    """
    n = 0
    for layer in qmodel.layers:
        if not isinstance(layer, QuantConvBN):
            continue
        fq = _input_quantizer(layer)
        var = layer.beta if layer.use_bn else (layer.bias if layer.use_bias else None)
        if fq is None or var is None:  # no bias at all is on every grid
            continue
        bias = np.asarray(layer.folded()[1], np.float64)
        step = fq.scale_zero_point()[0] * layer.weight_scales()
        delta = (np.round(bias / step) * step - bias).astype(np.float32)
        var.assign(np.asarray(var) + delta)
        n += 1
    return n


def _retyped(obj, dtype: str):
    """A copy of a Keras config tree with every float32 ``dtype`` entry set to ``dtype``."""
    if isinstance(obj, list):
        return [_retyped(v, dtype) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k == "dtype" and v == "float32":
            out[k] = dtype
        elif k == "dtype" and isinstance(v, dict) and v.get("config", {}).get("name") == "float32":
            out[k] = {**v, "config": {**v["config"], "name": dtype}}
        else:
            out[k] = _retyped(v, dtype)
    return out


def float64_twin(qmodel):
    """``qmodel`` rebuilt in float64 with the same weights: what its int8 file computes.

    The int8 file sums integers exactly and rounds once per tensor; the float32 QAT model
    rounds every product and partial sum, which moves about 2 in 100,000 outputs of a layer
    across a rounding boundary, and a deep network amplifies those one-step differences.
    In float64 the fake quantizers see the exact sums (see
    :func:`hmff_edge.quant.fakequant.quantize_fixed`), so this twin is the reference the int8
    export is verified against. Inference only.
    """
    twin = keras.Model.from_config(_retyped(qmodel.get_config(), "float64"))
    twin.set_weights([np.asarray(w, np.float64) for w in qmodel.get_weights()])
    return twin


def is_qat_model(model) -> bool:
    """Whether ``model`` holds fake quantizers (a model :func:`quantize_model` built)."""
    return any(isinstance(layer, FakeQuant) for layer in model.layers)


def reference_model(model):
    """``(model, input dtype)`` to evaluate ``model`` with: a QAT model's
    :func:`float64_twin` (the model its int8 file is verified against), else itself."""
    if is_qat_model(model):
        return float64_twin(model), np.float64
    return model, np.float32


def reference_predictions(model, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """``model``'s outputs on ``x`` in inference (float32), through :func:`reference_model`."""
    model, dtype = reference_model(model)
    return np.concatenate([np.asarray(model(x[i:i + batch].astype(dtype), training=False),
                                      np.float32) for i in range(0, len(x), batch)])
