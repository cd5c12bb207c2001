"""Progress for long steps: a bar over an iterable (tqdm when installed, else
a line every ~10 %) and ``step(...)``, which says what is starting and how
long it took. Both write to stderr, so results on stdout stay clean."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def progress(iterable, enabled: bool = True, desc: str = "", unit: str = "it", total: int | None = None, **kw):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain(iterable, desc, unit, total)
    return tqdm(iterable, desc=desc, unit=unit, total=total, **kw)


def _plain(iterable, desc, unit, total):
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    start, shown = time.perf_counter(), -1
    for i, item in enumerate(iterable):
        yield item
        if total:
            tenth = (i + 1) * 10 // total
            if tenth != shown:
                shown = tenth
                print(f"{desc}: {i + 1}/{total} {unit} ({time.perf_counter() - start:.1f}s)", file=sys.stderr, flush=True)


@contextmanager
def step(what: str, enabled: bool = True):
    """``with step("pruning"):`` prints '[llmpack] pruning ...' then '... done in 3.2s'."""
    if not enabled:
        yield
        return
    print(f"[llmpack] {what} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"[llmpack] {what}: done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
