"""The README and the scripts that assemble it, loaded for the docs tests."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"


def assembler() -> ModuleType:
    """docs/assemble_readme.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("assemble_readme", DOCS / "assemble_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    """Everything a reader of the project's documentation reads."""
    return [README, *sorted(DOCS.glob("*.md")), *sorted((DOCS / "readme").glob("*.md"))]


def outside_fences(text: str) -> str:
    """The text with fenced code blocks blanked out (their `#` lines are not headings)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def code_blocks(text: str) -> list[tuple[str, str, str]]:
    """(info string, body, the line before the fence) of every fenced block, in order."""
    blocks: list[tuple[str, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info = lines[i][3:].strip()
            before = lines[i - 1] if i else ""
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append((info, "\n".join(lines[i + 1 : end]) + "\n", before))
            i = end + 1
        else:
            i += 1
    return blocks
