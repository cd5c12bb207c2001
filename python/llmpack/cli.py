"""``llmpack`` command line: info | demo."""
from __future__ import annotations

import argparse
import sys


def cmd_info(_args) -> int:
    import torch

    import llmpack
    from llmpack import _lib

    archs = _lib.cuda_archs()
    rows = [
        ("llmpack", llmpack.__version__),
        ("torch", f"{torch.__version__} (CUDA runtime: {torch.version.cuda or 'none'}, "
                  f"GPU visible: {torch.cuda.is_available()})"),
        ("library", _lib.LIBRARY_PATH),
        ("CPU ISA", f"{_lib.active_isa()} (best supported: {_lib.cpu_isa()}; "
                    f"override with LLMPACK_ISA=generic|avx2|avx512|avx512_bf16|amx)"),
        ("CPU features", ", ".join(_lib.cpu_features()) or "-"),
        ("threads", str(torch.get_num_threads())),
        ("CUDA kernels", f"compiled for sm_{', sm_'.join(archs)}" if archs else "not compiled"),
        ("CUTLASS kernels", "yes" if _lib.has_cutlass() else "no"),
        ("ops", ", ".join(f"llmpack.{n}" for n in _lib.registered_ops())),
        ("tested with", _tested_with()),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _tested_with() -> str:
    """'dist==tested' per pin, with what is installed here when it differs."""
    from llmpack._versions import version_report

    cells = []
    for dist, tested, installed in version_report():
        base = installed.split("+")[0] if installed else None
        note = "" if base == tested else f" (installed: {installed or 'none'})"
        cells.append(f"{dist}=={tested}{note}")
    return ", ".join(cells)


def cmd_demo(args) -> int:
    """SmolLM2-135M dense vs 2:4 (llmpack.demo), after a one-line kernel check."""
    rc = cmd_pack_demo(args)
    from llmpack import demo

    return rc or demo.run(method=args.method, new_tokens=args.tokens, dtype=args.dtype)


def cmd_pack_demo(_args) -> int:
    """One-line kernel demo: prune a weight to 2:4, pack it, unpack it exactly."""
    import torch

    import llmpack

    torch.manual_seed(0)
    W = torch.randn(4096, 4096, dtype=torch.bfloat16)
    groups = W.view(4096, -1, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    W = (groups * torch.zeros_like(groups).scatter_(-1, keep, 1)).view(4096, 4096)
    values, meta = llmpack.sparse24_compress(W)
    exact = torch.equal(llmpack.sparse24_decompress(values, meta), W)
    dense_b = W.numel() * W.element_size()
    packed_b = values.numel() * values.element_size() + meta.numel()
    print(f"2:4 pack of a 4096x4096 bf16 weight: {dense_b / 2**20:.1f} MiB -> {packed_b / 2**20:.1f} MiB "
          f"({dense_b / packed_b:.2f}x smaller), exact round trip: {exact}")
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmpack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="version, ISA level, CUDA archs, registered ops").set_defaults(fn=cmd_info)
    demo = sub.add_parser("demo", help="SmolLM2-135M dense vs 2:4: text, tokens/s, size, perplexity")
    demo.add_argument("--method", default="sparsegpt", choices=["magnitude", "wanda", "sparsegpt"])
    demo.add_argument("--tokens", type=int, default=32, help="greedy tokens to generate")
    demo.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    demo.set_defaults(fn=cmd_demo)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
