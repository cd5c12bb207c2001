"""DFloat11 layers in vLLM (imported by ``config``; imports vLLM).

A DFloat11 container cannot be split row-wise the way vLLM's loaders fill a
merged ``qkv_proj`` / ``gate_up_proj`` weight (its Huffman stream has no
row boundaries), so each part's container is kept as loaded, keyed by the
loader's shard id, and at run time every part is decoded into its rows of one
bf16 buffer just before the matmul: the layer never holds its weight
decoded between calls. The matmul is ``F.linear`` on the decoded weight, the
same bf16 values vLLM's dense path multiplies.

Embedding tables (and an untied output head) are decoded once after loading
into vLLM's own dense ``weight``: vLLM reads them by row index and by its
logits path, which take a plain tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from vllm.model_executor.layers.linear import LinearMethodBase
from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
from vllm.model_executor.utils import set_weight_attrs

from ... import _ops

# The container tensors as llmpack.save names them (DF11Linear's buffers), with their dtypes.
CONTAINER = (("lengths", torch.uint8), ("stream", torch.uint8), ("offsets", torch.uint32),
             ("sign_mantissa", torch.uint8))
_QKV = {"q": 0, "k": 1, "v": 2}


def _shard_index(shard_id) -> int:
    if shard_id is None:
        return 0
    if isinstance(shard_id, str) and shard_id in _QKV:
        return _QKV[shard_id]
    if isinstance(shard_id, int) and not isinstance(shard_id, bool):
        return shard_id
    raise ValueError(f"llmpack DF11 in vLLM: cannot load a DFloat11 container into shard {shard_id!r} "
                     "(only whole parts of a merged layer)")


def _create_placeholders(layer, weight_loader_attrs: dict):
    """Empty parameters under the checkpoint's tensor names (so vLLM's loader
    finds them), whose loader files each part's tensor away by shard."""
    layer.llmpack_df11_parts = {}

    def loader(name):
        def load(param, loaded_weight, shard_id=None):
            sid = shard_id if shard_id is not None else getattr(loaded_weight, "shard_id", None)
            layer.llmpack_df11_parts.setdefault(_shard_index(sid), {})[name] = loaded_weight.detach().clone()
        return load

    for name, dtype in CONTAINER:
        param = torch.nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
        layer.register_parameter(name, param)
        set_weight_attrs(param, {**weight_loader_attrs, "weight_loader": loader(name)})


def _collect_parts(layer, prefix: str, rows: list[int], cols: int) -> list[tuple[torch.Tensor, ...]]:
    """The loaded containers in row order, each checked (decodes, right size)."""
    parts = layer.llmpack_df11_parts
    if sorted(parts) != list(range(len(rows))):
        raise ValueError(f"llmpack DF11 in vLLM: {prefix or 'layer'} expects {len(rows)} DFloat11 part(s), "
                         f"the checkpoint gave shards {sorted(parts)}")
    out = []
    for i, n_rows in enumerate(rows):
        missing = [n for n, _ in CONTAINER if n not in parts[i]]
        if missing:
            raise ValueError(f"llmpack DF11 in vLLM: {prefix or 'layer'} part {i} lacks {missing}")
        c = tuple(parts[i][n].contiguous() for n, _ in CONTAINER)
        if c[3].numel() != n_rows * cols:
            raise ValueError(f"llmpack DF11 in vLLM: {prefix or 'layer'} part {i} holds {c[3].numel()} values, "
                             f"the layer needs {n_rows} x {cols}")
        _ops.df11_decode(*c)  # a corrupted stream fails at load, naming its chunk, not at the first request
        out.append(c)
    for name, _ in CONTAINER:
        delattr(layer, name)
    del layer.llmpack_df11_parts
    return out


class DF11LinearMethod(LinearMethodBase):
    """A Linear whose bf16 weight (each part of a merged layer) is held as
    DFloat11 containers and decoded just before each matmul."""

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        from vllm.distributed import get_tensor_model_parallel_world_size

        if get_tensor_model_parallel_world_size() != 1:
            raise ValueError("llmpack DF11 in vLLM: tensor parallelism cannot split a DFloat11 stream; "
                             "serve with tensor_parallel_size=1")
        layer.llmpack_rows = list(output_partition_sizes)
        layer.llmpack_in_features = input_size_per_partition
        _create_placeholders(layer, {k: v for k, v in extra_weight_attrs.items() if k != "weight_loader"})

    def process_weights_after_loading(self, layer) -> None:
        layer.llmpack_df11 = _collect_parts(layer, getattr(layer, "prefix", ""), layer.llmpack_rows,
                                            layer.llmpack_in_features)

    def apply(self, layer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        w = torch.empty(sum(layer.llmpack_rows), layer.llmpack_in_features, dtype=torch.bfloat16, device=x.device)
        row = 0
        for c, n_rows in zip(layer.llmpack_df11, layer.llmpack_rows):
            _ops.df11_decode_into(*c, w[row:row + n_rows])
            row += n_rows
        return F.linear(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))


class DF11EmbeddingMethod(UnquantizedEmbeddingMethod):
    """An embedding table (or untied output head) stored as DFloat11,
    decoded once after loading into vLLM's dense ``weight``."""

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        super().create_weights(layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                               params_dtype, **extra_weight_attrs)
        layer.llmpack_dim = input_size_per_partition
        _create_placeholders(layer, {})

    def process_weights_after_loading(self, layer) -> None:
        dim, weight = layer.llmpack_dim, layer.weight
        if not layer.llmpack_df11_parts:  # this table came dense (or is tied to one that did)
            for name, _ in CONTAINER:
                delattr(layer, name)
            del layer.llmpack_df11_parts
            super().process_weights_after_loading(layer)
            return
        values = layer.llmpack_df11_parts.get(0, {}).get("sign_mantissa")
        rows = values.numel() // dim if values is not None else 0
        if rows > weight.shape[0] or (values is not None and values.numel() % dim):
            raise ValueError(f"llmpack DF11 in vLLM: embedding table of {0 if values is None else values.numel()} "
                             f"values does not fit [{weight.shape[0]}, {dim}]")
        (c,) = _collect_parts(layer, getattr(layer, "prefix", ""), [rows], dim)
        # vLLM pads the vocabulary: the table fills the first rows, in place (a tied head shares this tensor).
        weight.data[:rows].copy_(_ops.df11_decode(*c).view(rows, dim).to(weight.dtype))
        super().process_weights_after_loading(layer)
