"""The handbook's grpcurl walkthrough (docs/walkthrough.md), pasted as it is
into a shell against a real server, prints what the page says it prints; so
do the README's quick-start calls. How blocks are run: tests/pages.py."""

import re
import subprocess
import sys

from tests.pages import DOCS, QUICK_START_ADDRESS, ROOT, PageRun, first_block, run_blocks, start_server

README = ROOT / "README.md"


def test_the_walkthrough_prints_what_the_page_shows(tmp_path):
    with PageRun(DOCS / "walkthrough.md", tmp_path / "data") as page:
        page.check()


def test_the_readme_quick_start_calls_print_what_the_readme_shows(tmp_path):
    start = first_block(README, "bash", after="## Quick start")
    serve = next(line for line in start.splitlines() if "scripts/dev serve" in line)
    service = start_server(f"export {serve.split()[0]}\nscripts/dev serve", tmp_path / "data")
    try:
        grpcurl = first_block(README, "bash", after="## Try it")
        [printed] = run_blocks(service, [grpcurl])
        assert printed.splitlines() == first_block(README, "text", after="## Try it").splitlines()
        example = first_block(README, "python", after="## Try it")
        assert example.count(QUICK_START_ADDRESS) == 1
        result = subprocess.run(
            [sys.executable, "-c", example.replace(QUICK_START_ADDRESS, service.address)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == first_block(README, "text", after="```python")
    finally:
        assert service.terminate() == 0


def test_ci_runs_the_readmes_test_command():
    start = first_block(README, "bash", after="## Quick start")
    [test_command] = [line.split("#")[0].strip() for line in start.splitlines() if "scripts/dev test" in line]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(test_command)}$", ci, re.MULTILINE), test_command


def test_the_analytics_walkthrough_prints_what_the_page_shows(tmp_path):
    with PageRun(DOCS / "analytics.md", tmp_path / "data") as page:
        page.check()
