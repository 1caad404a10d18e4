"""Bad input: every public function answers with an exception that names the
argument and what was expected.  The whole table (tests/bad_inputs.py) runs
in a subprocess, so a crash fails these tests instead of killing the suite."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

import bad_inputs

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    proc = subprocess.run([sys.executable, str(HERE / "bad_inputs.py")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path_factory.mktemp("bad"))
    res, started = {}, None
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec.get("start"):
            started = rec["case"]
        else:
            res[rec["case"]] = rec
    return proc, res, started


@pytest.mark.parametrize("i", range(len(bad_inputs.CASES)), ids=bad_inputs.IDS)
def test_bad_input(outcomes, i):
    proc, res, started = outcomes
    if i not in res:
        pytest.fail(f"the subprocess died (rc={proc.returncode}) during case {started}:\n{proc.stderr[-3000:]}")
    fn, kw, exc, msg = bad_inputs.CASES[i]
    got = res[i]
    assert got["type"] == exc.__name__, f"expected {exc.__name__}, got {got['type']}: {got['msg']}"
    assert re.search(msg, got["msg"]), f"message {got['msg']!r} does not match {msg!r}"


def test_subprocess_exit_clean(outcomes):
    proc, res, _ = outcomes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(res) == len(bad_inputs.CASES)
