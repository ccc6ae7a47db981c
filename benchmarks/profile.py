"""py-spy recordings of a granian worker under wrk load, and summaries of their collapsed stacks
(top functions by own and total time, and by package)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.load import wrk
from benchmarks.procs import cpu_seconds

if TYPE_CHECKING:
    from benchmarks.run import Bench, Target

BIN = Path(sys.executable).parent
# (recording mode, seconds) -> the wrk script for that recording, or None.
ScriptFor = Callable[[str, float], Path | None]

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


def _no_script(mode: str, seconds: float) -> Path | None:
    return None


def record(
    bench: Bench,
    target: Target,
    path: str,
    label: str,
    out_name: str,
    script: ScriptFor = _no_script,
) -> dict[str, Any]:
    """py-spy on the target's granian worker while wrk drives 64 connections on path.

    Two recordings: Python frames only (where our code spends its time), then with native
    frames (--native), which shows the syscalls, GC and granian's Rust side under them. The
    summary goes to results_dir/out_name; returns the rates wrk saw under py-spy.
    """
    seconds = bench.plan.seconds + 2
    # Profile the granian worker only: the main process just supervises.
    tree = target.servers[0].tree()
    worker = max(tree[1:] or tree, key=lambda p: cpu_seconds([p]))
    sections, rates = [], {}
    for mode, extra, rate in (("python", [], "200"), ("native", ["--native"], "100")):
        raw = bench.work / f"{out_name}-{mode}.collapsed"
        pyspy = [str(BIN / "py-spy"), "record", "--pid", str(worker), *extra, "--rate", rate]
        pyspy += ["--duration", str(seconds), "--format", "raw", "--output", str(raw)]
        wrk_script = script(mode, seconds + 1)
        spy = subprocess.Popen(
            bench.cores.pin(pyspy, bench.cores.load),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        result = wrk(target.url(path), 64, seconds + 1, bench.load_pin, wrk_script)
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        ok = result.requests - result.non_2xx
        rates[mode] = round(ok / result.seconds, 1)
        refused = f", {result.non_2xx} not 2xx" if result.non_2xx else ""
        sections.append(
            summarize(
                raw.read_text(),
                title=f"mpp-proxy, {label}, 64 connections, {mode} frames, "
                f"{rates[mode]:.0f} 2xx/s under py-spy{refused}",
            )
        )
    text = "\n\n".join(sections)
    bench.results_dir.mkdir(parents=True, exist_ok=True)
    (bench.results_dir / out_name).write_text(text)
    print(text[:3000])
    return {"file": out_name, "rps_while_profiling": rates}
