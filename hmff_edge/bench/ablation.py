"""What an op type costs inside the whole graph: time the ``.tflite`` file with those ops taken
out (their consumers rewired to the op's input) beside the file itself.

The saving (time both files with :func:`hmff_edge.bench.runner.round_robin_ms`) is an upper
bound on what any faster spelling, kernel or fusion of those ops could buy in that graph: it
is the time of the graph in which they cost nothing. Unlike per-op profiles
(:mod:`hmff_edge.bench.opprofile`) it needs no attribution between neighbours, only two
whole-graph times, so it is steady on a shared machine.

Only ops whose output has the shape of their first input can go (an activation, a stride-1
depthwise, a MUL or ADD by a constant); a two-input op only when its second input is a
constant or is computed from its first (``x * sigmoid(x)``, ``x * relu6(x + 3)``), so a
residual ADD of two branches stays; and only where every consumer of that input goes too
(the input takes over the removed output's int8 grid, which it must not change under an op
that stays). The ablated file computes something else; it is for timing only.

TF-free: the file is edited with ``ai_edge_litert.tools.flatbuffer_utils``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Named op sets: what the headroom record takes out.
OP_SETS = {
    "depthwise": frozenset({"DEPTHWISE_CONV_2D"}),
    "activations": frozenset({"LOGISTIC", "MUL", "HARD_SWISH", "ADD"}),
    "depthwise+activations": frozenset({"DEPTHWISE_CONV_2D", "LOGISTIC", "MUL", "HARD_SWISH",
                                        "ADD"}),
}


@dataclass(frozen=True)
class Ablated:
    """A ``.tflite`` file with ``dropped`` ops of ``op_types`` taken out."""

    op_types: frozenset[str]
    dropped: Counter
    content: bytes


def op_set(name: str) -> frozenset[str]:
    try:
        return OP_SETS[name]
    except KeyError:
        raise ValueError(f"unknown op set {name!r}; known: {', '.join(OP_SETS)}") from None


def ablate(path: str, op_types: frozenset[str] | set[str]) -> Ablated:
    """The file at ``path`` without its removable ops of ``op_types`` (see the module doc)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(path)
    if len(model.subgraphs) != 1:
        raise ValueError(f"{path}: {len(model.subgraphs)} subgraphs; only a single-subgraph "
                         "model can be ablated")
    model.signatureDefs = []  # a signature would still name the removed outputs
    sg = model.subgraphs[0]
    names = [fu.opcode_to_name(model, op.opcodeIndex) for op in sg.operators]
    consumers: dict[int, list[int]] = {}
    for k, op in enumerate(sg.operators):
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(k)
    producers = {o: op for op in sg.operators for o in op.outputs}
    const = {i for i, t in enumerate(sg.tensors)
             if t.buffer and model.buffers[t.buffer].data is not None
             and len(model.buffers[t.buffer].data)}
    alias: dict[int, int] = {}
    keep, keep_names, dropped = [], [], Counter()
    for k, (op, name) in enumerate(zip(sg.operators, names)):
        op.inputs = [alias.get(i, i) for i in op.inputs]
        if name in op_types and _removable(sg, op, k, names, consumers, producers, const, op_types):
            src = op.inputs[0]
            out = op.outputs[0]
            if sg.tensors[out].quantization is not None:
                sg.tensors[src].quantization = sg.tensors[out].quantization
            alias[out] = src
            # The output's readers now read the input: they are its readers from here on.
            consumers[src] = [c for c in consumers.get(src, []) if c != k] + consumers.get(out, [])
            dropped[name] += 1
            continue
        keep.append(op)
        keep_names.append(name)
    sg.operators = keep
    sg.outputs = [alias.get(i, i) for i in sg.outputs]
    _share_concat_grids(sg, keep_names)
    return Ablated(frozenset(op_types), dropped, bytes(fu.convert_object_to_bytearray(model)))


def _removable(sg, op, k: int, names: list[str], consumers: dict[int, list[int]],
               producers: dict[int, object], const: set[int], op_types) -> bool:
    if len(op.outputs) != 1 or not op.inputs or op.inputs[0] < 0:
        return False
    src, out = op.inputs[0], op.outputs[0]
    if src in sg.inputs or list(sg.tensors[src].shape) != list(sg.tensors[out].shape):
        return False
    if len([i for i in op.inputs if i >= 0]) > 1 and not _from_same_input(op, producers, const):
        return False
    # The input takes the output's int8 grid: every other reader of it must go as well.
    return all(names[c] in op_types for c in consumers.get(src, []) if c != k)


def _from_same_input(op, producers: dict[int, object], const: set[int]) -> bool:
    """A two-input op's second input is a constant, the first itself (its producer was taken
    out), or the output of an op that read the first."""
    src, other = op.inputs[0], op.inputs[1]
    if other in const or other == src:
        return True
    prod = producers.get(other)
    return prod is not None and src in prod.inputs


def _share_concat_grids(sg, names: list[str]) -> None:
    """int8 CONCATENATION needs its inputs on its output's grid (the converter puts them
    there); an input rewired to another producer gets that grid back."""
    for op, name in zip(sg.operators, names):
        if name != "CONCATENATION":
            continue
        q = sg.tensors[op.outputs[0]].quantization
        if q is not None and q.scale is not None and len(q.scale):
            for i in op.inputs:
                sg.tensors[i].quantization = q

