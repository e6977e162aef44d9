"""Runs the shell blocks of a handbook page against a real server, as a reader
pastes them, and compares what they print with what the page shows.

A page in this format (docs/walkthrough.md, docs/analytics.md, ...) has
```bash blocks; the first one starts the server (`scripts/dev serve`, after
`export FEEDBACK_...=...` lines, which become the server's settings). Every
later ```bash block runs in one bash session, in order, from the repository
root, with the real grpcurl, `localhost:50051` replaced by the server's
address. Each block's output is compared with the ```json or ```text block
that follows it: JSON object by object, with ids, timestamps, page tokens and
cursors matched by their shape instead of their value; text line by line. A
block with no output block after it must print no error.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.harness import BIN, ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
QUICK_START_ADDRESS = "localhost:50051"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXPORT = re.compile(r"^export (FEEDBACK_\w+)=(\S+)$", re.MULTILINE)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
# Opaque values that differ on every run: only their presence is checked.
OPAQUE_KEYS = {"nextPageToken", "cursor"}
MARK = "@@@ page block"


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a page, in order."""
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(path.read_text())]


def first_block(path: Path, language: str, after: str | None = None) -> str:
    """The first ```language block of a page (after the text `after`, if given)."""
    text = path.read_text()
    start = text.index(after) if after else 0
    found = re.compile(rf"^```{language}\n(.*?)^```$", re.DOTALL | re.MULTILINE).search(text, start)
    assert found, f"no {language} block in {path.name}"
    return found.group(1)


def steps(page: list[tuple[str, str]]) -> list[tuple[str, tuple[str, str] | None]]:
    """(bash, the output block after it or None), for every bash block."""
    found = []
    for index, (language, body) in enumerate(page):
        if language == "bash":
            after = page[index + 1] if index + 1 < len(page) else None
            found.append((body, after if after and after[0] in ("json", "text") else None))
    return found


def start_server(start_block: str, data_dir: Path) -> ServiceProcess:
    """The server the page's first block starts, with the settings it exports."""
    assert "scripts/dev serve" in start_block, start_block
    settings = {name.removeprefix("FEEDBACK_").lower(): value for name, value in EXPORT.findall(start_block)}
    return ServiceProcess(data_dir, **settings)


def json_values(text: str) -> list[Any]:
    decoder, position = json.JSONDecoder(), 0
    values: list[Any] = []
    text = text.strip()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def same_shape(documented: Any, printed: Any, path: str = "") -> None:
    """Equal, except that ids, timestamps and opaque tokens need only match
    in kind."""
    assert type(printed) is type(documented), f"{path}: {printed!r} is not like {documented!r}"
    if isinstance(documented, dict):
        assert printed.keys() == documented.keys(), f"{path}: keys {sorted(printed)} != {sorted(documented)}"
        for key, value in documented.items():
            if key in OPAQUE_KEYS:
                assert printed[key], f"{path}.{key} is empty"
            else:
                same_shape(value, printed[key], f"{path}.{key}")
    elif isinstance(documented, list):
        assert len(printed) == len(documented), f"{path}: {len(printed)} items, not {len(documented)}"
        for index, (a, b) in enumerate(zip(documented, printed, strict=True)):
            same_shape(a, b, f"{path}[{index}]")
    elif isinstance(documented, str) and (UUID.fullmatch(documented) or TIMESTAMP.fullmatch(documented)):
        pattern = UUID if UUID.fullmatch(documented) else TIMESTAMP
        assert pattern.fullmatch(printed), f"{path}: {printed!r} is not like {documented!r}"
    else:
        assert printed == documented, f"{path}: {printed!r} != {documented!r}"


def run_blocks(service: ServiceProcess, scripts: list[str]) -> list[str]:
    """Runs the blocks in one bash session; returns each block's output."""
    session = "exec 2>&1\n" + "".join(
        f"echo '{MARK} {index}'\n{body.replace(QUICK_START_ADDRESS, service.address)}\n"
        for index, body in enumerate(scripts)
    )
    env = {**service.env, "PATH": f"{BIN}:/usr/bin:/bin"}
    finished = subprocess.run(
        ["bash", "-c", session], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    outputs = re.split(rf"^{MARK} \d+\n", finished.stdout, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(scripts), finished.stdout
    return outputs


def check_outputs(walk: list[tuple[str, tuple[str, str] | None]], outputs: list[str]) -> None:
    for (body, documented), printed in zip(walk, outputs, strict=True):
        if documented is None:
            assert "ERROR" not in printed and "rror" not in printed, f"{body}\nprinted:\n{printed}"
        elif documented[0] == "json":
            try:
                values = json_values(printed)
            except json.JSONDecodeError:
                raise AssertionError(f"{body}\nprinted, not JSON:\n{printed}") from None
            expected = json_values(documented[1])
            assert len(values) == len(expected), f"{body}\nprinted:\n{printed}"
            for want, got in zip(expected, values, strict=True):
                same_shape(want, got)
        else:
            assert printed.strip().splitlines() == documented[1].strip().splitlines(), body


class PageRun:
    """A page's server, started as its first block says, and its later blocks
    run against it: `with PageRun(page, tmp_path) as run: run.check()`."""

    def __init__(self, page: Path, data_dir: Path) -> None:
        start, *self.walk = steps(blocks(page))
        self.service = start_server(start[0], data_dir)

    def __enter__(self) -> "PageRun":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        code = self.service.terminate()
        assert kind is not None or code == 0

    def run(self) -> list[str]:
        return run_blocks(self.service, [body for body, _ in self.walk])

    def check(self) -> None:
        """Runs the page's blocks and asserts they print what the page shows."""
        check_outputs(self.walk, self.run())
