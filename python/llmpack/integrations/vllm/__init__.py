"""llmpack as a vLLM plugin (entry point ``vllm.general_plugins``: ``llmpack``).

vLLM calls :func:`register` in each of its processes (engine, workers,
model-inspection subprocess), possibly more than once; ``VLLM_PLUGINS=llmpack``
allow-lists it. It registers the ``llmpack`` quantization method, which

* serves checkpoints written by :func:`llmpack.save` (``quant_method:
  llmpack``): each Linear listed in the config runs on the llmpack kernel of
  its format (2:4 today), every other one stays vLLM's own;
* claims compressed-tensors ``sparse-24-bitmask`` checkpoints (vLLM 0.32
  refuses them since compressed-tensors dropped sparsity) through
  ``override_quantization_method``, converting each bitmask to llmpack's 2:4
  metadata after loading;

and installs sinks + window KV eviction (``additional_config={"llmpack_kv":
{"policy": "sink", "sink_tokens": 4, "window": 256}}``, CPU backend; see
``kv.py``), inert without that key.

Nothing here imports vLLM until ``register`` runs, so llmpack works without it.
"""
from __future__ import annotations

_registered = False


def register() -> None:
    """Register llmpack's quantization method with vLLM (idempotent)."""
    global _registered
    if _registered:
        return
    from . import config  # noqa: F401  (imports vLLM; the decorator registers)
    from . import kv

    kv.install()

    _registered = True
