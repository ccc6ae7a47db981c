"""What `make demo` installs: the product's runtime only, declared so no installer warns."""

from __future__ import annotations

import os
import subprocess
import tomllib

from readme_parts import REPO


def _dry_run(target: str) -> str:
    # Not the flags of a make this test may run under (make test): they add directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout


def test_make_demo_installs_the_runtime_dependencies_only() -> None:
    commands = _dry_run("demo")
    assert "pip install --quiet -e .\n" in commands
    assert "[dev]" not in commands and "[bench]" not in commands
    assert commands.rstrip().endswith("mpp-proxy demo")


def test_make_test_installs_the_dev_extra() -> None:
    assert "pip install --quiet -e '.[dev]'" in _dry_run("test")


def test_the_license_is_an_spdx_expression_and_the_test_tools_are_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
    runtime = " ".join(project["project"]["dependencies"])
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "openai", "anthropic", "schemathesis"):
        assert tool not in runtime
        assert any(d.startswith(tool) for d in project["project"]["optional-dependencies"]["dev"])
