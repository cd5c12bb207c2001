"""vLLM linear method for QuantLinear (the BTC format, llmpack.save's "btc"
modules). Every packed tensor is row-major in the output features (planes
[N, k_words, wbits]; scales, zeros | offsets, code_sums [N, groups]), so each
is a ``ModelWeightParameter`` with output_dim 0 and vLLM's loaders stack the
parts of a merged q/k/v or gate/up layer row-wise, as they do a dense weight.
An act-order module's ``input_perm`` [in] is one tensor for the whole merged
layer (its parts share their input): every part must bring the same one."""
from __future__ import annotations

import torch
from vllm.model_executor.layers.linear import LinearMethodBase
from vllm.model_executor.parameter import ModelWeightParameter

from ... import _ops

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What must agree between the parts of a merged layer (they become one weight).
SHARED_KEYS = ("wbits", "abits", "group_size", "zero_point", "act_symmetric", "scale_dtype", "in_features", "bias",
               "act_order")


def shared_spec(specs: list[dict], prefix: str) -> dict:
    keys = {tuple(s.get(k, False if k == "act_order" else None) for k in SHARED_KEYS) for s in specs}
    if len(keys) != 1:
        raise ValueError(f"llmpack vLLM plugin: the parts of merged layer {prefix!r} are quantized differently "
                         f"({[dict(zip(SHARED_KEYS, k)) for k in sorted(keys, key=str)]}); vLLM stacks them "
                         "into one weight, so wbits, abits, group_size and the offset form must agree")
    return specs[0]


class BtcLinearMethod(LinearMethodBase):
    """A Linear held as BTC bit planes, run by ``torch.ops.llmpack.btc_linear``."""

    def __init__(self, spec: dict):
        self.spec = spec

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        s, k, n = self.spec, input_size_per_partition, sum(output_partition_sizes)
        loader = extra_weight_attrs["weight_loader"]
        groups, sdt = _ops.btc_num_groups(s["group_size"], k), _DTYPES[s["scale_dtype"]]

        def param(name, shape, dtype):
            layer.register_parameter(name, ModelWeightParameter(data=torch.empty(*shape, dtype=dtype), input_dim=1,
                                                                output_dim=0, weight_loader=loader))

        param("planes", (n, _ops.btc_k_words(k), s["wbits"]), torch.int32)
        param("scales", (n, groups), sdt)
        param("zeros" if s["zero_point"] else "offsets", (n, groups), torch.uint8 if s["zero_point"] else sdt)
        param("code_sums", (n, groups), torch.int32)
        layer.llmpack_btc = s
        if s.get("act_order", False):
            if k != input_size:
                raise NotImplementedError("llmpack vLLM plugin: an act-order QuantLinear (input_perm) cannot be "
                                          "split over its inputs (tensor parallelism)")
            perm = torch.nn.Parameter(torch.empty(k, dtype=torch.int64), requires_grad=False)
            perm.weight_loader = load_input_perm
            layer.register_parameter("input_perm", perm)

    def process_weights_after_loading(self, layer) -> None:
        if hasattr(layer, "input_perm"):
            from ...nn.quant_linear import check_permutation

            where = f"llmpack vLLM plugin: layer {getattr(layer, 'prefix', '?')!r}"
            if not getattr(layer.input_perm, "llmpack_parts", None):
                raise ValueError(f"{where} is act-order but the checkpoint has no input_perm for it")
            check_permutation(layer.input_perm.data, layer.input_perm.numel(), f"{where}: input_perm")
        for name in ("planes", "scales", "zeros", "offsets", "code_sums"):
            if hasattr(layer, name):
                setattr(layer, name, torch.nn.Parameter(getattr(layer, name).data.contiguous(), requires_grad=False))
        layer.scaled_sums = None
        if layer.planes.device.type == "cpu":  # the CPU kernels' faster layout, same bytes (QuantLinear does the same)
            layer.planes = torch.nn.Parameter(_ops.btc_to_fields(layer.planes.data, layer.llmpack_btc["wbits"]),
                                              requires_grad=False)
            if layer.llmpack_btc["abits"] != 16:  # the integer kernels' per-row correction input, formed once
                layer.scaled_sums = _ops.btc_scaled_sums(layer.scales.data, layer.code_sums.data)

    def apply(self, layer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        s = layer.llmpack_btc
        if s.get("act_order", False):
            x = x.index_select(-1, layer.input_perm)
        return _ops.btc_linear(x, layer.planes, layer.scales, getattr(layer, "zeros", None),
                               getattr(layer, "offsets", None), layer.code_sums, s["wbits"], s["abits"],
                               s["group_size"], None if bias is None else bias.to(x.dtype), s["act_symmetric"],
                               layer.scaled_sums)


def load_input_perm(param: torch.nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
    """vLLM's loader for ``input_perm``: the first part of a merged layer fills it, the others must
    bring the same permutation (their inputs are one tensor, gathered once)."""
    if tuple(loaded.shape) != tuple(param.shape):
        raise ValueError(f"llmpack vLLM plugin: input_perm of shape {list(loaded.shape)}, the layer has "
                         f"{param.shape[0]} inputs")
    parts = getattr(param, "llmpack_parts", None)
    if not parts:
        param.data.copy_(loaded)
        param.llmpack_parts = [shard_id]
    elif not torch.equal(param.data, loaded.to(param.dtype)):
        raise ValueError(f"llmpack vLLM plugin: the parts of a merged layer have different input permutations "
                         f"(part {shard_id!r} differs from part {parts[0]!r}); vLLM feeds them one input, so "
                         "act-order parts must share one")
    else:
        parts.append(shard_id)
