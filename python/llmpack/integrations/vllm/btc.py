"""vLLM linear method for QuantLinear (the BTC format, llmpack.save's "btc"
modules). Every packed tensor is row-major in the output features (planes
[N, k_words, wbits]; scales, zeros | offsets, code_sums [N, groups]), so each
is a ``ModelWeightParameter`` with output_dim 0 and vLLM's loaders stack the
parts of a merged q/k/v or gate/up layer row-wise, as they do a dense weight."""
from __future__ import annotations

import torch
from vllm.model_executor.layers.linear import LinearMethodBase
from vllm.model_executor.parameter import ModelWeightParameter

from ... import _ops

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What must agree between the parts of a merged layer (they become one weight).
SHARED_KEYS = ("wbits", "abits", "group_size", "zero_point", "act_symmetric", "scale_dtype", "in_features", "bias")


def shared_spec(specs: list[dict], prefix: str) -> dict:
    keys = {tuple(s.get(k) for k in SHARED_KEYS) for s in specs}
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

    def process_weights_after_loading(self, layer) -> None:
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
        return _ops.btc_linear(x, layer.planes, layer.scales, getattr(layer, "zeros", None),
                               getattr(layer, "offsets", None), layer.code_sums, s["wbits"], s["abits"],
                               s["group_size"], None if bias is None else bias.to(x.dtype), s["act_symmetric"],
                               layer.scaled_sums)
