"""The README's Python example, run as written against a real
`feedback-service serve` started as the walkthrough starts it."""

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import ServiceProcess

README = Path(__file__).resolve().parent.parent / "README.md"
QUICK_START_ADDRESS = "localhost:50051"


def readme_block(section: str, language: str) -> str:
    """The first ```language block after the heading `## section`."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    found = re.compile(rf"^```{language}\n(.*?)^```$", re.DOTALL | re.MULTILINE).search(text, start)
    assert found, f"no {language} block in {section}"
    return found.group(1)


def test_the_python_example_runs_and_prints_what_the_readme_shows(tmp_path):
    example = readme_block("Calling from Python", "python")
    shown = readme_block("Calling from Python", "text")
    assert example.count(QUICK_START_ADDRESS) == 1
    service = ServiceProcess(tmp_path / "data", service_tokens="platform=dev-platform-token")
    try:
        for _ in range(2):  # it can be run again: registration and upsert are idempotent
            result = subprocess.run(
                [sys.executable, "-c", example.replace(QUICK_START_ADDRESS, service.address)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == shown
    finally:
        assert service.terminate() == 0
