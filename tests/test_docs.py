"""Every code block a user copies from README.md and docs/ works: Python blocks run as written (page by page,
in an empty folder holding a small simulated tomogram), and every `annotomo` command line parses."""

import os
import re
import shlex
from pathlib import Path

import pytest

from annotomo import simulate
from annotomo.cli import build_parser
from annotomo.volumes import write_volume

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page, language):
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def command_lines(page):
    """`annotomo ...` command lines of a page's bash blocks (continuations joined, comments dropped)."""
    lines = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "-m annotomo " in line:  # torchrun ... -m annotomo train ...
                line = "annotomo " + line.split("-m annotomo ", 1)[1]
            if line.startswith("annotomo "):
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def cell():
    return simulate(shape=(32, 128, 128), seed=3)  # a cell with every feature


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
@pytest.mark.slow
def test_the_python_blocks_of_a_page_run_as_written(page, cell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_volume("cell_tomo.mrc", cell.tomogram, (28.0,) * 3)  # what the pages' examples start from
    write_volume("cell_labels.mrc", cell.labels, (28.0,) * 3, class_names=cell.class_names)
    namespace = {"__name__": "annotomo_docs"}
    for number, code in enumerate(blocks(page, "python"), start=1):
        try:
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:  # noqa: BLE001 - reported with the block's page and number
            pytest.fail(f"{page.name}, Python block {number}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("page", [p for p in PAGES if command_lines(p)], ids=lambda p: p.name)
def test_every_annotomo_command_line_of_a_page_parses(page, monkeypatch):
    parser = build_parser()
    for line in command_lines(page):
        argv = shlex.split(line)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                pytest.fail(f"{page.name}: `{line}` does not parse")


def test_the_docs_link_only_to_files_that_exist():
    for page in PAGES + [ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "RESULTS.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_stays_short_and_answers_the_first_questions():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for needle in (
        "make demo",
        "make test",
        "Annotating only some slices",
        "255",
        "Angstrom",
        "dense matter dark",
        "benchmarks/RESULTS.md",
        "cellular-v2",
        "annotomo view",
    ):
        assert needle in text, needle
    assert not re.search(r"20\d\d-\d\d-\d\d", text), "dates (measurement history) belong in RESULTS/CHANGELOG"
    assert os.path.exists(ROOT / "docs" / "images" / "napari_result.png")
