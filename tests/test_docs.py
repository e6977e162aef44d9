"""The handbook's generated pages are current, every FEEDBACK_* variable the
service names is a setting on the configuration page, and the README stays a
front door."""

import io
import re
import runpy
import tokenize
from pathlib import Path

from feedback_service.config import TEST_VARIABLES, variables

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = runpy.run_path(str(ROOT / "scripts" / "docs-reference"))
CONFIGURATION = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\bFEEDBACK_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def test_the_configuration_page_is_generated_from_the_settings_model():
    text = CONFIGURATION.read_text()
    assert GENERATOR["configuration_page"](text) == text, "run scripts/docs-reference"


def test_the_api_reference_is_generated_from_the_descriptors():
    assert GENERATOR["api_reference"]() == (ROOT / "docs" / "reference" / "api.md").read_text()


def named_variables() -> set[str]:
    """FEEDBACK_* names in the string literals of the service's code, less the
    names of its own constants (FEEDBACK_COLUMNS) that comments mention."""
    found, identifiers = set(), set()
    for path in (ROOT / "feedback_service").rglob("*.py"):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for token in tokens:
            if token.type == tokenize.NAME:
                identifiers.add(token.string)
            elif token.type == tokenize.STRING or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                found |= set(VARIABLE.findall(token.string))
    return found - identifiers - TEST_VARIABLES


def test_every_variable_the_service_names_is_a_documented_setting():
    named = named_variables()
    assert "FEEDBACK_JWT_SECRET" in named  # the search finds them
    assert named <= set(variables())
    page = CONFIGURATION.read_text()
    for name in variables():
        assert f"| `{name}` |" in page
    assert not set(variables()) & TEST_VARIABLES


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
