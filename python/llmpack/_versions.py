"""The dependency versions llmpack was tested with (tested_versions.txt, the
file scripts/setup.sh installs from) next to the ones installed here."""
from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version

_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tested_versions.txt")


def tested_versions() -> dict[str, str]:
    """{distribution: pinned version} for every `name==version` line."""
    pins = {}
    with open(_FILE) as f:
        for line in f:
            match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
            if match:
                pins[match[1]] = match[2]
    return pins


def installed_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def version_report() -> list[tuple[str, str, str | None]]:
    """[(distribution, tested, installed or None)]."""
    return [(dist, pin, installed_version(dist)) for dist, pin in tested_versions().items()]
