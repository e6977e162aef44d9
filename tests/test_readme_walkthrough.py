"""The grpcurl walkthroughs (the README's, and the handbook pages' in
WALKTHROUGHS), pasted as they are into a shell against a real server, print
what the documents say they print.

Every ```bash block of the "Walkthrough with grpcurl" section after the first
(which starts the server) runs in one bash session, in order, from the
repository root, with the real grpcurl. Each block's output is compared with
the ```json or ```text block that follows it: JSON object by object, with ids,
timestamps, page tokens and cursors matched by their shape instead of their
value; text line by line.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import BIN, ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Walkthrough with grpcurl"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
# Opaque values that differ on every run: only their presence is checked.
OPAQUE_KEYS = {"nextPageToken", "cursor"}
MARK = "@@@ walkthrough block"


# The documents with a "Walkthrough with grpcurl" section, each run on a fresh server.
WALKTHROUGHS = ["README.md", "docs/analytics.md"]


def walkthrough_blocks(document: str = "README.md") -> list[tuple[str, str]]:
    text = (ROOT / document).read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end  # the section may end the document
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(text[start:end])]


def steps(blocks: list[tuple[str, str]]) -> list[tuple[str, tuple[str, str] | None]]:
    """(bash, the output block after it or None), for every bash block."""
    found = []
    for index, (language, body) in enumerate(blocks):
        if language == "bash":
            after = blocks[index + 1] if index + 1 < len(blocks) else None
            found.append((body, after if after and after[0] in ("json", "text") else None))
    return found


def json_values(text: str) -> list:
    decoder, values, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def same_shape(documented, printed, path: str = "") -> None:
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


def run_walkthrough(service: ServiceProcess, scripts: list[str]) -> list[str]:
    """Runs the blocks in one bash session; returns each block's output."""
    session = "exec 2>&1\n" + "".join(
        f"echo '{MARK} {index}'\n{body.replace('localhost:50051', service.address)}\n"
        for index, body in enumerate(scripts)
    )
    env = {**service.env, "PATH": f"{BIN}:/usr/bin:/bin"}
    finished = subprocess.run(
        ["bash", "-c", session], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    outputs = re.split(rf"^{MARK} \d+\n", finished.stdout, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(scripts), finished.stdout
    return outputs


@pytest.mark.parametrize("document", WALKTHROUGHS)
def test_the_walkthrough_prints_what_the_readme_shows(tmp_path, document):
    blocks = walkthrough_blocks(document)
    start, *walk = steps(blocks)
    tokens = re.search(r"FEEDBACK_SERVICE_TOKENS=(\S+)", start[0]).group(1)
    assert "scripts/dev serve" in start[0]
    service = ServiceProcess(tmp_path / "data", service_tokens=tokens)
    try:
        outputs = run_walkthrough(service, [body for body, _ in walk])
    finally:
        service.terminate()
    for (body, documented), printed in zip(walk, outputs, strict=True):
        if documented is None:
            assert "ERROR" not in printed and "rror" not in printed, f"{body}\nprinted:\n{printed}"
        elif documented[0] == "json":
            values, expected = json_values(printed), json_values(documented[1])
            assert len(values) == len(expected), f"{body}\nprinted:\n{printed}"
            for want, got in zip(expected, values, strict=True):
                same_shape(want, got)
        else:
            assert printed.strip().splitlines() == documented[1].strip().splitlines(), body
