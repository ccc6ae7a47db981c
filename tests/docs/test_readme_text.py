"""README.md is assembled, navigable, says each thing once and speaks only of the project."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from readme_parts import (
    DOCS,
    README,
    REPO,
    assembler,
    code_blocks,
    markdown_files,
    outside_fences,
)


def test_readme_is_what_make_readme_writes() -> None:
    assert README.read_text(encoding="utf-8") == assembler().assemble(), "run `make readme`"


def test_contents_lists_every_section_and_every_anchor_exists() -> None:
    text = README.read_text(encoding="utf-8")
    module = assembler()
    headings = re.findall(r"^#+ (.+)$", outside_fences(text), flags=re.M)
    anchors = {module.slug(h) for h in headings}
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    sections = [module.slug(h) for h in re.findall(r"^## (.+)$", outside_fences(text), flags=re.M)]
    assert listed == [s for s in sections if s not in ("two-commands", "contents")]
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor


def test_every_linked_file_exists() -> None:
    for path in markdown_files():
        for target in re.findall(r"\]\(([^)#\s]+)\)", path.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            base = REPO if path == README else path.parent
            resolved = (base / target).resolve()
            assert resolved.exists(), f"{path.relative_to(REPO)} links to missing {target}"


@pytest.mark.parametrize(
    "pattern",
    [r"\bissues? ?#?\d", r"dev VM", r"\b\d-core\b", r"\bthe lead\b", r"\bhelper\b"],
)
def test_docs_speak_of_the_project_only(pattern: str) -> None:
    for path in markdown_files():
        found = re.findall(pattern, path.read_text(encoding="utf-8"), flags=re.I)
        assert not found, f"{path.relative_to(REPO)}: {found}"


def test_the_readme_holds_exactly_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("## Two commands\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make demo", "make test"]
    code = "\n".join(body for info, body, _ in code_blocks(text) if info in ("", "sh"))
    commands = re.findall(r"^\s*(?:\$ )?((?:make|pip|pip3|python3? -m pip) [\w-]+)", code, re.M)
    # Building benchmarks, the README or the container image is not setting up.
    setup = [c for c in commands if not c.startswith(("make bench", "make readme", "make image"))]
    assert sorted(set(setup)) == ["make demo", "make test"], setup


def test_each_thing_is_said_once() -> None:
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", outside_fences(text), flags=re.M)
    assert len([h for h in headings if "Embedding" in h]) == 1
    assert sorted(h for h in set(headings) if headings.count(h) > 1) == []
    # The [proxy] key table (its secret_key row) and the benchmark results table: once each.
    assert text.count("| `secret_key` |") == 1
    assert text.count("| small GET, 64 conns (req/s) |") == 1


def test_internals_live_in_docs_not_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for internal in ("gc.freeze", "sans-I/O", "bench_upstream_client", "taskset", "FreshPayer"):
        assert internal not in text, internal
    for page in ("upstream.md", "routing.md", "payments.md", "state.md", "benchmarks.md"):
        assert f"](docs/{page})" in text, page
        assert (DOCS / page).exists()


def test_a_new_section_is_one_line_and_a_missing_optional_one_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = assembler()
    parts = tmp_path / "readme"
    shutil.copytree(DOCS / "readme", parts)
    monkeypatch.setattr(module, "PARTS", parts)
    (parts / "deploy.md").unlink(missing_ok=True)
    without = module.assemble()
    assert "(#deploy)" not in without
    (parts / "deploy.md").write_text("## Deploy\n\nContainers.\n", encoding="utf-8")
    with_deploy = module.assemble()
    contents = with_deploy.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    assert "- [Deploy](#deploy)" in contents
    assert contents.index("(#operating)") < contents.index("(#deploy)")
    assert contents.index("(#deploy)") < contents.index("(#security)")
    assert "\n## Deploy\n\nContainers.\n" in with_deploy


def test_the_readme_and_openapi_agree_on_what_a_500_means() -> None:
    from mpp_proxy.config import load_config
    from mpp_proxy.discovery import openapi_document

    config = load_config(REPO / "examples" / "local-api.toml", {"MPP_SECRET_KEY": "k" * 32})
    document = openapi_document(config)
    described = document["components"]["responses"]["PaymentError"]["description"]
    operation = document["paths"]["/weather/v1/forecast/{city}"]["get"]
    assert operation["responses"]["500"]["$ref"].endswith("/PaymentError")
    assert "may have landed" in described and "same credential" in described
    assert "nothing was charged" not in described
    payments = README.read_text(encoding="utf-8").split("\n## Payments\n", 1)[1]
    assert "A 500 means the payment may have landed" in payments
    assert "Retry later with the same credential" in payments
