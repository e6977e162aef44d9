"""The client as a caller installs it: `pip install <repository>`, no extras,
into a fresh virtual environment (about 20 s, once for the module), and as
a type checker sees it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "tests" / "typed" / "client_usage.py"
MYPY = Path(sys.executable).parent / "mypy"
# Neither installed nor built: the caller's install needs pyproject.toml,
# README.md, generated/ and the Python packages.
NOT_SHIPPED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "data",
    "build",
    "node_modules",
    "benchmarks",
    "tests",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)
WRONG_REQUEST = """
from feedback.v1 import feedback_pb2 as pb
from feedback_client import FeedbackClient

FeedbackClient("localhost:50051").feedback.CreateFeedback(pb.ListFeedbackRequest())
"""


def run(*command: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install <copy of the repository>` and the type
    stub packages a caller who runs mypy adds."""
    root = tmp_path_factory.mktemp("client-install")
    # A checkout under a name of its own: the install must not depend on it.
    shutil.copytree(ROOT, root / "checkout-under-any-name", ignore=NOT_SHIPPED)
    venv = root / "venv"
    made = run(sys.executable, "-m", "venv", venv, timeout=120)
    assert made.returncode == 0, made.stderr
    installed = run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "./checkout-under-any-name",
        "types-grpcio",
        "types-protobuf",
        timeout=300,
        cwd=root,
    )
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_plain_install_has_the_client_and_none_of_the_servers_dependencies(client_venv):
    probe = (
        "import importlib.util, feedback_client, feedback.v1.feedback_pb2_grpc;"
        "import feedback.v1.thread_registry_pb2_grpc;"
        "print(sorted(m for m in ('peewee', 'jwt', 'prometheus_client', 'cryptography', 'grpc_health',"
        " 'opentelemetry') if importlib.util.find_spec(m)))"
    )
    result = run(client_venv / "bin" / "python", "-c", probe, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_server_command_asks_for_the_server_extra_in_one_line(client_venv):
    result = run(client_venv / "bin" / "feedback-service", "serve", timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "install feedback-service[server]" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_plain_install_brings_the_export_command_which_names_the_parquet_extra(client_venv):
    """Without the `export` extra there is no pyarrow: Parquet is refused
    before any call, in one line that says what to install."""
    command = client_venv / "bin" / "feedback-client"
    assert run(command, "export", "--help", timeout=60).returncode == 0
    result = run(command, "export", "--format", "parquet", timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "pip install 'feedback-service[export]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_client_type_checks_a_callers_code(client_venv, tmp_path):
    """mypy --strict on a caller's file, with only the installed package (its
    py.typed and .pyi files) to go by: correct code passes, a wrong request
    type is caught."""
    shutil.copy(USAGE, tmp_path / "usage.py")
    (tmp_path / "wrong.py").write_text(WRONG_REQUEST)
    checked = {}
    for name in ("usage.py", "wrong.py"):
        checked[name] = run(
            MYPY,
            "--strict",
            "--no-incremental",
            "--python-executable",
            client_venv / "bin" / "python",
            name,
            cwd=tmp_path,
            timeout=300,
        )
    assert checked["usage.py"].returncode == 0, checked["usage.py"].stdout
    assert checked["wrong.py"].returncode == 1
    assert (
        'incompatible type "ListFeedbackRequest"; expected "CreateFeedbackRequest"'
        in checked["wrong.py"].stdout
    )


def test_the_client_code_type_checks_strictly():
    """mypy with pyproject.toml's settings: feedback_client, the caller's file and the server."""
    result = run(MYPY, "--no-incremental", cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout
