"""Real English text for calibrating and evaluating compressed models.

Primary source: Jane Austen's six novels as shipped by the Debian package
``r-cran-janeaustenr`` (an R lazy-load database, read with our own decoder in
:mod:`llmpack.data.rdata`, so R itself is not needed). Fallback: the
reStructuredText sources of the Python docs from ``python3.11-doc``.

The split is by *document*, never by position inside one document, so that no
sentence of the evaluation text was seen during calibration.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .rdata import read_lazyload_db

AUSTEN_PACKAGE = "r-cran-janeaustenr"
PYDOC_PACKAGE = "python3.11-doc"

# R object name -> title (the titles used by janeaustenr::austen_books()).
AUSTEN_TITLES = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
DEFAULT_EVAL_BOOK = "Persuasion"

_R_LIBRARIES = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library")
_PYDOC_DIRS = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/python3-doc/html/_sources")


class CorpusNotInstalled(FileNotFoundError):
    pass


def _austen_db() -> Path | None:
    roots = [os.environ["LLMPACK_R_LIBRARY"]] if os.environ.get("LLMPACK_R_LIBRARY") else []
    for root in [*roots, *_R_LIBRARIES]:
        base = Path(root) / "janeaustenr" / "data" / "Rdata"
        if base.with_suffix(".rdx").is_file() and base.with_suffix(".rdb").is_file():
            return base
    return None


def austen_available() -> bool:
    return _austen_db() is not None


def load_austen() -> dict[str, str]:
    """Return {title: full text} for the six novels, in publication order.

    The package keeps Project Gutenberg's hard line wraps (~70 columns); they are
    undone here (lines of a paragraph joined with spaces, paragraphs separated
    by a blank line) because a newline every few words is not the running text
    a language model is calibrated or evaluated on.
    """
    base = _austen_db()
    if base is None:
        raise CorpusNotInstalled(
            f"Jane Austen corpus not found: install it with `apt-get install -y {AUSTEN_PACKAGE}` "
            f"(looked in {', '.join(_R_LIBRARIES)}; set LLMPACK_R_LIBRARY to override)"
        )
    objects = read_lazyload_db(base)
    return {title: _reflow(objects[name]) for name, title in AUSTEN_TITLES.items()}


def _reflow(lines) -> str:
    paragraphs, current = [], []
    for line in lines:
        line = (line or "").strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def load_python_docs() -> dict[str, str]:
    """Return {relative path: text} of the Python documentation sources, sorted by path."""
    for d in _PYDOC_DIRS:
        root = Path(d)
        files = sorted(root.rglob("*.rst.txt")) if root.is_dir() else []
        if files:
            return {str(f.relative_to(root)): f.read_text(encoding="utf-8", errors="replace") for f in files}
    raise CorpusNotInstalled(f"Python docs not found: install them with `apt-get install -y {PYDOC_PACKAGE}`")


def calibration_and_eval_text(source: str = "auto", eval_book: str = DEFAULT_EVAL_BOOK) -> tuple[str, str, str]:
    """Return (calibration_text, eval_text, description) from disjoint documents.

    source="austen": calibration = the five novels other than `eval_book`,
    evaluation = `eval_book` (default "Persuasion", the last novel written).
    source="python-docs": sorted .rst sources, every 6th file held out for evaluation.
    source="auto": Austen if installed, else the Python docs.
    """
    if source == "auto":
        source = "austen" if austen_available() else "python-docs"
    if source == "austen":
        books = load_austen()
        if eval_book not in books:
            raise ValueError(f"unknown book {eval_book!r}; choose one of {list(books)}")
        calib = [t for title, t in books.items() if title != eval_book]
        desc = f"calibration: {', '.join(b for b in books if b != eval_book)}; evaluation: {eval_book} (Jane Austen, {AUSTEN_PACKAGE})"
        return "\n\n".join(calib), books[eval_book], desc
    if source == "python-docs":
        docs = list(load_python_docs().values())
        calib = [t for i, t in enumerate(docs) if i % 6 != 5]
        held = [t for i, t in enumerate(docs) if i % 6 == 5]
        desc = f"calibration: {len(calib)} Python doc pages; evaluation: {len(held)} other pages ({PYDOC_PACKAGE})"
        return "\n\n".join(calib), "\n\n".join(held), desc
    raise ValueError(f"unknown source {source!r}; use 'auto', 'austen' or 'python-docs'")


def _encode(tokenizer, text: str) -> list[int]:
    try:
        # HF tokenizers: no BOS/EOS in the middle of running text, no length warning.
        return tokenizer.encode(text, add_special_tokens=False, verbose=False)
    except TypeError:
        return tokenizer.encode(text)


def tokenize_chunks(tokenizer, text: str, seq_len: int, n: int) -> torch.Tensor:
    """Tokenize `text` and cut `n` non-overlapping windows of `seq_len` tokens.

    Windows are spread evenly over the whole text (not just its beginning) so
    that a handful of chunks still samples every part of a long document.
    Deterministic: same text and tokenizer give the same LongTensor [n, seq_len].
    """
    if seq_len <= 0 or n <= 0:
        raise ValueError("seq_len and n must be positive")
    ids = _encode(tokenizer, text)
    if len(ids) < n * seq_len:
        raise ValueError(f"text has {len(ids)} tokens, fewer than n*seq_len = {n}*{seq_len}")
    stride = len(ids) // n
    return torch.tensor([ids[i * stride : i * stride + seq_len] for i in range(n)], dtype=torch.long)
