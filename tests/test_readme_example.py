"""The handbook's Python example (docs/python-client.md), run as written
after the walkthrough, on the walkthrough's server, prints what the page shows
(twice: registration and upsert are idempotent)."""

import subprocess
import sys

from tests.pages import DOCS, QUICK_START_ADDRESS, PageRun, first_block

PAGE = DOCS / "python-client.md"


def test_the_python_example_runs_after_the_walkthrough_and_prints_what_the_page_shows(tmp_path):
    example = first_block(PAGE, "python")
    shown = first_block(PAGE, "text", after="```python")
    assert example.count(QUICK_START_ADDRESS) == 1
    with PageRun(DOCS / "walkthrough.md", tmp_path / "data") as page:
        page.run()
        for _ in range(2):
            result = subprocess.run(
                [sys.executable, "-c", example.replace(QUICK_START_ADDRESS, page.service.address)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == shown
