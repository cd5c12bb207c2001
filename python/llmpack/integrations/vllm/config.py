"""The ``llmpack`` quantization method for vLLM (imports vLLM: loaded by
``llmpack.integrations.vllm.register``).

Parameters are created the way vLLM's own unquantized method creates its
weight (``ModelWeightParameter``, output_dim 0, input_dim 1), one per packed
tensor, so vLLM's standard loaders fill them, merged q/k/v and gate/up
included: each part's rows land at its row offset, and since 2:4 values and
metadata are both row-wise, a stacked (values, meta) pair is still valid.
"""
from __future__ import annotations

import torch
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase, UnquantizedLinearMethod
from vllm.model_executor.layers.quantization import register_quantization_config
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig
from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod, VocabParallelEmbedding
from vllm.model_executor.models.utils import WeightsMapper
from vllm.model_executor.parameter import ModelWeightParameter

import llmpack  # noqa: F401  (loads the kernels and registers their fake impls for torch.compile)

from ... import _ops
from ...io.compressed_tensors import from_sparse24_bitmask
from .btc import BtcLinearMethod, shared_spec
from .df11 import DF11EmbeddingMethod, DF11LinearMethod
from ...sparse24 import pad_k
from .selection import format_of, is_ct_sparse24, is_tied, parts_of

NAME = "llmpack"


def _packed_param(layer, name: str, rows: int, cols: int, dtype: torch.dtype, weight_loader):
    param = ModelWeightParameter(data=torch.empty(rows, cols, dtype=dtype), input_dim=1, output_dim=0,
                                 weight_loader=weight_loader)
    layer.register_parameter(name, param)


class Sparse24LinearMethod(LinearMethodBase):
    """A Linear held as llmpack 2:4 ``values [N, K/2]`` + ``meta uint8
    [N, ceil(K/8)]`` (K padded to a multiple of 4), run by
    ``torch.ops.llmpack.sparse24_linear`` (CPU SIMD/AMX kernels, CUDA mma.sp)."""

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        k = input_size_per_partition + (-input_size_per_partition) % 4
        n = sum(output_partition_sizes)
        loader = extra_weight_attrs["weight_loader"]
        self._create(layer, n, k, params_dtype, loader)
        layer.llmpack_in_features = input_size_per_partition

    def _create(self, layer, n, k, dtype, loader):
        _packed_param(layer, "values", n, k // 2, dtype, loader)
        _packed_param(layer, "meta", n, (k // 4 + 1) // 2, torch.uint8, loader)

    def process_weights_after_loading(self, layer) -> None:
        # Plain tensors for the kernel (the loader's parameter wrappers are not needed any more).
        layer.values = torch.nn.Parameter(layer.values.data.contiguous(), requires_grad=False)
        layer.meta = torch.nn.Parameter(layer.meta.data.contiguous(), requires_grad=False)

    def apply(self, layer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if layer.llmpack_in_features % 4:
            x = pad_k(x)
        return _ops.sparse24_linear(x, layer.values, layer.meta, bias)


class CTSparse24LinearMethod(Sparse24LinearMethod):
    """A compressed-tensors sparse-24-bitmask Linear: loaded as the file has
    it (``compressed`` + ``bitmask``), converted to llmpack's metadata once
    after loading (exact: the same kept values in the same order)."""

    def _create(self, layer, n, k, dtype, loader):
        _packed_param(layer, "compressed", n, k // 2, dtype, loader)
        _packed_param(layer, "bitmask", n, (k + 7) // 8, torch.uint8, loader)

    def process_weights_after_loading(self, layer) -> None:
        compressed, bitmask = layer.compressed.data, layer.bitmask.data
        rows, k = compressed.shape[0], compressed.shape[1] * 2
        values, meta = from_sparse24_bitmask(compressed, bitmask, torch.tensor([rows, k]))
        del layer.compressed, layer.bitmask
        layer.values = torch.nn.Parameter(values.contiguous(), requires_grad=False)
        layer.meta = torch.nn.Parameter(meta.contiguous(), requires_grad=False)


@register_quantization_config(NAME)
class LlmpackConfig(QuantizationConfig):
    """Checkpoints of :func:`llmpack.save` and compressed-tensors
    sparse-24-bitmask ones (see the package docstring)."""

    def __init__(self, hf_config: dict):
        super().__init__()
        self.hf_config = hf_config

    def get_name(self) -> str:
        return NAME

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def get_min_capability(cls) -> int:
        return 80  # the CUDA 2:4 kernels use mma.sp (sm_80+); not consulted on CPU

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []  # the quantization_config inside config.json is all we read

    @classmethod
    def from_config(cls, config: dict) -> "LlmpackConfig":
        return cls(config)

    @classmethod
    def override_quantization_method(cls, hf_quant_cfg, user_quant, hf_config=None):
        if isinstance(hf_quant_cfg, dict) and (hf_quant_cfg.get("quant_method") == NAME or is_ct_sparse24(hf_quant_cfg)):
            if user_quant in (None, NAME, "compressed-tensors"):
                return NAME
        return None

    @staticmethod
    def get_checkpoint_weight_mapper() -> WeightsMapper:
        # compressed-tensors stores each dense shape as a [2, 1] tensor; the
        # parameters already have it.
        return WeightsMapper(orig_to_new_suffix={".g_idx": None, ".shape": None})

    def get_quant_method(self, layer, prefix: str):
        if isinstance(layer, VocabParallelEmbedding):  # embeddings and output heads
            if self.hf_config.get("quant_method") != NAME:
                return None
            if prefix:
                fmt = format_of(self.hf_config, prefix, {})
            else:  # vLLM builds some models' embeddings without a prefix; the method copes with no DF11 tensors
                fmt = "df11_embedding" if any((m or {}).get("format") == "df11_embedding"
                                              for m in (self.hf_config.get("modules") or {}).values()) else None
            if fmt in ("df11", "df11_embedding") and not is_tied(self.hf_config, prefix):
                return DF11EmbeddingMethod()
            return UnquantizedEmbeddingMethod() if fmt in (None, "df11", "df11_embedding") else _unservable(prefix, fmt)
        if not isinstance(layer, LinearBase):
            return None
        fmt = format_of(self.hf_config, prefix, self.packed_modules_mapping)
        if fmt == "df11":
            return DF11LinearMethod()
        if fmt == "sparse24":
            return Sparse24LinearMethod()
        if fmt == "ct-sparse24":
            return CTSparse24LinearMethod()
        if fmt == "btc":
            modules = self.hf_config.get("modules") or {}
            parts = parts_of(prefix, self.packed_modules_mapping)
            return BtcLinearMethod(shared_spec([modules[p] for p in parts], prefix))
        if fmt is None:
            return UnquantizedLinearMethod()
        return _unservable(prefix, fmt)


def _unservable(prefix: str, fmt: str):
    raise ValueError(f"llmpack vLLM plugin: layer {prefix!r} has format {fmt!r}, which this version of "
                     "the plugin cannot serve")
