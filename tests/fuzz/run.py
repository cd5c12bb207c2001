"""Runs the fuzz targets (fuzz_*.py here) under atheris, each in its own
process on the ASan + UBSan build of the library (build/sanitize/, made by
scripts/build_sanitized.sh), and prints per target the inputs tried, the
corpus size and the crashes found. Exit status 1 if any target crashed.

    python tests/fuzz/run.py --seconds 45 [--jobs 2] [target ...]

Coverage guidance comes from atheris' instrumentation of llmpack's Python
layer and the targets; the native code is sanitized (every access checked)
but not coverage-instrumented (GCC cannot emit libFuzzer's counters). A crash
leaves its input in <out>/<target>/crash-*; copy it into
regressions/<target>/ so the ordinary test run replays it
(tests/test_fuzz_targets.py).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SAN_ENV = os.path.join(ROOT, "build", "sanitize", "sanitize.env")


def targets() -> list[str]:
    return sorted(os.path.basename(p)[len("fuzz_"):-3] for p in glob.glob(os.path.join(HERE, "fuzz_*.py")))


def sanitized_env() -> dict:
    if not os.path.exists(SAN_ENV):
        sys.exit(f"run.py: {SAN_ENV} missing: run scripts/build_sanitized.sh first")
    env = dict(os.environ)
    for line in open(SAN_ENV):
        key, sep, value = line.strip().partition("=")
        if sep and key:
            env[key] = value
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _reference_modules() -> list[str]:
    """llmpack.reference and its modules by full name (atheris matches exactly)."""
    ref_dir = os.path.join(ROOT, "python", "llmpack", "reference")
    return ["llmpack.reference"] + [f"llmpack.reference.{f[:-3]}" for f in os.listdir(ref_dir)
                                    if f.endswith(".py") and f != "__init__.py"]


def child(name: str, seconds: int, corpus: str, artifacts: str):
    """Inside the sanitized process: instrument llmpack + the target, fuzz."""
    import atheris
    import torch  # noqa: F401  (not instrumented: only our code guides the search)

    # The references are the oracle, not the code under test: left
    # uninstrumented (atheris' per-line hooks slow their Python loops 10x+).
    with atheris.instrument_imports(include=["llmpack", "_fuzz", f"fuzz_{name}", "fuzz_sparse24_decompress"],
                                    exclude=_reference_modules()):
        import importlib

        target = importlib.import_module(f"fuzz_{name}")
    torch.set_num_threads(1)
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
            f.write(seed)
    atheris.Setup([sys.argv[0], corpus, f"-max_total_time={seconds}", "-rss_limit_mb=12000", "-timeout=30",
                   "-max_len=4096", f"-artifact_prefix={artifacts}/", "-print_final_stats=1"],
                  target.TestOneInput)
    atheris.Fuzz()


def run_target(name: str, seconds: int, out: str) -> dict:
    corpus, artifacts = os.path.join(out, name, "corpus"), os.path.join(out, name)
    os.makedirs(artifacts, exist_ok=True)
    env = sanitized_env()
    # Sanitizer reports of this target go next to its artifacts (and into the summary).
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env[var] = re.sub(r"log_path=[^:]*", f"log_path={artifacts}/report", env.get(var, ""))
    start = time.time()
    log_path = os.path.join(artifacts, "log.txt")
    # Output to a file, not a pipe: a symbolizer started for a report may
    # outlive the process and keep a pipe open.
    with open(log_path, "w") as log_file:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--seconds", str(seconds), "--out", out],
                              env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=seconds + 600)
    log = open(log_path, errors="replace").read()
    for report in sorted(glob.glob(os.path.join(artifacts, "report.*"))):
        log += f"\n--- sanitizer report {report}:\n" + open(report, errors="replace").read()[:8000]
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    crashes = sorted(glob.glob(os.path.join(artifacts, "crash-*")) + glob.glob(os.path.join(artifacts, "timeout-*"))
                     + glob.glob(os.path.join(artifacts, "oom-*")))
    sanitizer = bool(re.search(r"ERROR: AddressSanitizer|runtime error:", log))
    failed = proc.returncode != 0 or bool(crashes) or sanitizer
    return {"name": name, "runs": int(runs[-1]) if runs else 0, "corpus": len(os.listdir(corpus)) if os.path.isdir(corpus) else 0,
            "crashes": max(len(crashes), int(failed)), "seconds": time.time() - start, "rc": proc.returncode,
            "log": log if failed else "", "artifacts": crashes}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help=f"targets (default all: {', '.join(targets())})")
    ap.add_argument("--seconds", type=int, default=45, help="fuzzing time per target")
    ap.add_argument("--jobs", type=int, default=1, help="targets run at once")
    ap.add_argument("--out", default=None, help="corpus/crash folder (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seconds, os.path.join(args.out, args.child, "corpus"), os.path.join(args.out, args.child))
        return 0
    names = args.names or targets()
    unknown = set(names) - set(targets())
    if unknown:
        sys.exit(f"run.py: unknown targets {sorted(unknown)}; have {targets()}")
    out = args.out or tempfile.mkdtemp(prefix="llmpack-fuzz-")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run_target(n, args.seconds, out), names))
    print(f"{'target':<28} {'inputs':>10} {'corpus':>7} {'crashes':>8} {'seconds':>8}")
    for r in results:
        print(f"{r['name']:<28} {r['runs']:>10} {r['corpus']:>7} {r['crashes']:>8} {r['seconds']:>8.0f}")
    total = sum(r["runs"] for r in results)
    bad = [r for r in results if r["crashes"]]
    print(f"fuzz: {total} inputs over {len(results)} targets, {sum(r['crashes'] for r in results)} crashes "
          f"({out})")
    for r in bad:
        print(f"--- {r['name']}: rc={r['rc']} artifacts={r['artifacts']}\n{r['log'][-6000:]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
