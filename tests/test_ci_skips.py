"""Under CI (env `CI` set, as `.ci/run` does) a skipped test fails the run; elsewhere it is a skip."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING = {
    "test_marked.py": "import pytest\n\n@pytest.mark.skip(reason='not here')\ndef test_marked():\n    pass\n",
    "test_module.py": "import pytest\n\npytest.skip('no module', allow_module_level=True)\n",
    "test_empty.py": "import pytest\n\n@pytest.mark.parametrize('x', [])\ndef test_empty(x):\n    pass\n",
}
PASSING = {"test_fine.py": "def test_fine():\n    assert True\n"}


def _pytest(tmp_path: Path, files: dict[str, str], *, ci: str | None) -> subprocess.CompletedProcess:
    """Run pytest on `files` in `tmp_path` with this directory's conftest as a plugin."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    # The tests above never reach a fixture, so the session's kernel warm-up does not run.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "reason", "code"),
    [
        ("test_marked.py", "not here", pytest.ExitCode.TESTS_FAILED),
        ("test_empty.py", "got empty parameter set", pytest.ExitCode.TESTS_FAILED),
        # A module that skips itself is an error at collection, which stops the run.
        ("test_module.py", "no module", pytest.ExitCode.INTERRUPTED),
    ],
)
def test_under_ci_a_skip_fails_the_run_with_its_reason(tmp_path, name, reason, code):
    proc = _pytest(tmp_path, {name: SKIPPING[name]} | PASSING, ci="true")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "a skip fails under CI (CI=true), which runs every test" in proc.stdout, proc.stdout
    assert reason in proc.stdout and re.search(r"\d+ skipped", proc.stdout) is None, proc.stdout


def test_without_ci_a_skip_stays_a_skip(tmp_path):
    proc = _pytest(tmp_path, SKIPPING | PASSING, ci=None)
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    assert "1 passed, 3 skipped" in proc.stdout, proc.stdout


def test_under_ci_a_run_without_skips_passes(tmp_path):
    proc = _pytest(tmp_path, PASSING, ci="true")
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
