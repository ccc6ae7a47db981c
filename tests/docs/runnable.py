"""Runs the README's command blocks marked runnable, as a reader would, against loopback servers.

A block is marked by the HTML comment on the line before its fence (invisible on GitHub):

    <!-- runnable: SCENARIO [waits HOST:PORT ...] -->

Blocks of one scenario run in document order as one bash script (`set -e`), so exports and
background jobs (`cmd &`, `kill %1`) carry over from one block to the next as in one terminal;
`waits` makes the script wait after the block until those ports accept connections. The script
runs in a scratch directory holding a copy of examples/ and a link to the running virtualenv.
The README's fixed ports (4402 for the gateway, 8000 for the API behind it) become free ports in
the script and in the copied examples, and `replace` rewrites other text (an internet URL to a
loopback server).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from readme_parts import README, REPO, code_blocks

MARKER = re.compile(r"<!-- runnable: ([\w-]+)((?: waits(?: [\w.-]+:\d+)+)?) -->")
DOC_PORTS = (4402, 8000)


@dataclass(frozen=True)
class Block:
    scenario: str
    text: str
    waits: tuple[str, ...]


def runnable_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text(encoding="utf-8") if text is None else text
    found = []
    for info, body, before in code_blocks(text):
        match = MARKER.fullmatch(before.strip())
        if match:
            assert info == "sh", f"a runnable block must be ```sh, not {info!r}"
            waits = tuple(match.group(2).split()[1:])
            found.append(Block(match.group(1), body, waits))
    return found


def scenarios() -> list[str]:
    return list(dict.fromkeys(b.scenario for b in runnable_blocks()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PRELUDE = """\
set -e -o pipefail
__wait() {  # HOST:PORT ...: until each accepts a connection (30 s at most)
  for target in "$@"; do
    for _ in $(seq 600); do
      (exec 3<>"/dev/tcp/${target%%:*}/${target##*:}") 2>/dev/null && continue 2
      sleep 0.05
    done
    echo "runnable docs: nothing listens on $target" >&2; exit 97
  done
}
"""


@dataclass
class Run:
    code: int
    out: str
    workdir: Path
    ports: dict[int, int]


def run_scenario(
    name: str,
    workdir: Path,
    *,
    replace: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> Run:
    """Run every block of scenario `name`; its output and the ports that replaced the README's."""
    blocks = [b for b in runnable_blocks() if b.scenario == name]
    assert blocks, f"no runnable blocks for scenario {name!r}"
    ports = {doc: free_port() for doc in DOC_PORTS}
    shutil.copytree(REPO / "examples", workdir / "examples")
    (workdir / ".venv").symlink_to(Path(sys.prefix))

    def rewrite(text: str) -> str:
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        for doc, port in ports.items():
            text = re.sub(rf"\b{doc}\b", str(port), text)
        return text

    for example in (workdir / "examples").rglob("*"):
        if example.is_file():
            example.write_text(rewrite(example.read_text(encoding="utf-8")), encoding="utf-8")
    script = [_PRELUDE]
    for index, block in enumerate(blocks, 1):
        script.append(f"echo '--- block {index} of {name}'\n{rewrite(block.text)}")
        if block.waits:
            script.append("__wait " + " ".join(rewrite(w) for w in block.waits) + "\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MPP_", "RECIPIENT_"))}
    environ["PATH"] = f"{REPO / '.tools' / 'node_modules' / '.bin'}:{environ.get('PATH', '')}"
    environ.update(env or {})
    proc = subprocess.Popen(
        ["bash", "-c", "".join(script)],
        cwd=workdir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n(runnable docs: scenario {name} still running after {timeout:g} s)"
    finally:
        # Background jobs a block started and did not stop (a failed block): the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    return Run(proc.returncode, out, workdir, ports)
