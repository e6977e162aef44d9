"""scripts/dev, the entry point a new user meets first."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("serve", "test", "migrate", "token", "setup")


def dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROOT / "scripts" / "dev", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def described_commands(help_text: str) -> dict[str, str]:
    """Each `  command [ARGS]   description` line of the help: the
    description (after a run of spaces), by command."""
    found = {}
    for line in help_text.splitlines():
        words = line.split()
        if line.startswith("  ") and words and words[0] in COMMANDS:
            found[words[0]] = "".join(re.split(r"\s{2,}", line.strip(), maxsplit=1)[1:])
    return found


@pytest.mark.parametrize("asking", ["--help", "-h", "help"])
def test_help_lists_every_command_with_a_description(asking):
    result = dev(asking)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: scripts/dev")
    described = described_commands(result.stdout)
    assert set(described) == set(COMMANDS)
    assert all(described.values()), described


def test_an_unknown_command_prints_the_help_to_stderr_and_fails():
    result = dev("serv")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == dev("--help").stdout
