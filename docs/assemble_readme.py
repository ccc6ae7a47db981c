"""Writes README.md from the section sources in docs/readme/ (run by `make readme`).

Each README section is one file of docs/readme/, in SECTIONS order; adding a section is one line
there. The table of contents is built from the sections' top headings. Links between parts
become anchors in the README, and links to docs/*.md (written `../NAME.md` in a part) point at
docs/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "docs" / "readme"
BENCH_TABLE = ROOT / "benchmarks" / "results" / "latest.md"


@dataclass(frozen=True)
class Section:
    """One README section: docs/readme/NAME.md; `optional` ones may not exist yet."""

    name: str
    optional: bool = False


# The page opens with docs/readme/intro.md (what it is, the two commands) and the contents;
# then, in reading order: try it, configure it, run it, pay it, operate it, trust it.
INTRO = "intro"
SECTIONS = [
    Section("quickstart"),
    Section("config"),
    Section("cli"),
    Section("payments"),
    Section("money"),
    Section("clients"),
    Section("discovery"),
    Section("limits"),
    Section("operating"),
    Section("deploy", optional=True),
    Section("security"),
    Section("benchmarks"),
    Section("limitations"),
    Section("layout"),
]
# Sections after which a generated file is inserted (its headings moved under the section), up
# to the named heading: the benchmark record's noise figures stay in the record.
INSERTS = {"benchmarks": (BENCH_TABLE, "## Noise")}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lstrip("#").strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every Markdown heading outside code fences."""
    found: list[tuple[int, str]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            level = len(line) - len(line.lstrip("#"))
            found.append((level, line[level:].strip()))
    return found


def _shift(text: str, level_of_top: int = 2) -> str:
    """Move the part's headings so its first heading gets `level_of_top`; code fences stay."""
    found = _headings(text)
    delta = level_of_top - (found[0][0] if found else level_of_top)
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            level = len(line) - len(line.lstrip("#"))
            line = "#" * max(level_of_top, level + delta) + line[level:]
        out.append(line)
    return "\n".join(out)


def _relink(text: str, anchors: dict[str, str]) -> str:
    """`](config.md)` to the section's anchor, `](../x.md)` to docs/x.md."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in anchors:
            return f"](#{anchors[name]})"
        return f"](docs/readme/{name}.md)"

    text = re.sub(r"\]\(([a-z0-9-]+)\.md\)", part, text)
    return re.sub(r"\]\(\.\./([A-Za-z0-9_/-]+\.md)\)", r"](docs/\1)", text)


def assemble() -> str:
    """The whole README text."""
    present = [s for s in SECTIONS if (PARTS / f"{s.name}.md").exists() or not s.optional]
    texts = {s.name: (PARTS / f"{s.name}.md").read_text(encoding="utf-8") for s in present}
    titles = {name: _headings(text)[0][1] for name, text in texts.items()}
    anchors = {name: slug(title) for name, title in titles.items()}
    contents = ["## Contents", ""]
    contents += [f"- [{titles[s.name]}](#{anchors[s.name]})" for s in present]
    intro = (PARTS / f"{INTRO}.md").read_text(encoding="utf-8").rstrip()
    parts = [_relink(intro, anchors) + "\n", "\n".join(contents) + "\n"]
    for section in present:
        parts.append(_relink(_shift(texts[section.name]), anchors).rstrip() + "\n")
        insert, stop = INSERTS.get(section.name, (None, ""))
        if insert is not None and insert.exists():
            record = insert.read_text(encoding="utf-8").split("\n" + stop + "\n", 1)[0]
            parts.append(_shift(record, 3).rstrip() + "\n")
    return "\n".join(parts)


def main() -> None:
    (ROOT / "README.md").write_text(assemble(), encoding="utf-8")


if __name__ == "__main__":
    main()
