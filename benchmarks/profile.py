"""Summaries of py-spy's collapsed stacks: top functions by own and total time, and by package."""

from __future__ import annotations

import re
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def _frame_key(frame: str) -> str:
    # "handle (mpp_proxy/core/app.py:120)" -> "handle (mpp_proxy/core/app.py)"
    return _LINE.sub(")", frame.strip())


def _package(frame: str) -> str:
    match = re.search(r"\((.*)\)$", frame)
    path = match.group(1) if match else frame
    path = path.split("site-packages/")[-1]
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].removesuffix(".py")
    parts = path.split("/")
    if parts[0] == "mpp_proxy" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarize(collapsed: str, title: str, top: int = 30) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # The first frame is py-spy's process/thread label, not code.
        frames = [_frame_key(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count

    def table(counter: Counter[str], heading: str, skip_base: bool = False) -> list[str]:
        out = [heading, f"{'%':>6}  {'samples':>8}  function (file)"]
        ranked = counter.most_common()
        if skip_base:
            # Frames under nearly every sample are the server's entry stack, not a cost.
            ranked = [(n, c) for n, c in ranked if c < 0.95 * samples]
        for name, count in ranked[:top]:
            out.append(f"{100 * count / max(1, samples):6.1f}  {count:8d}  {name}")
        return [*out, ""]

    lines = [f"# py-spy profile: {title}", f"# {samples} samples (active, non-idle)", ""]
    lines += table(packages, "## own time by package / module (where the leaf frame lives)")
    lines += table(own, "## top functions by own time")
    lines += table(
        total, "## top functions by total time (inclusive; entry frames in >95% left out)", True
    )
    return "\n".join(lines)
