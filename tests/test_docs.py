"""The documentation site builds with warnings as errors."""
import pathlib
import shutil
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.skipif(not (DOCS / "conf.py").exists(), reason="docs/ not present (installed without sources)")
def test_sphinx_build_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx.cmd.build")
    gen = DOCS / "generated"
    shutil.rmtree(gen, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(DOCS), str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    html = (tmp_path / "html" / "generated" / "pywino3d.conv3d.html").read_text()
    assert "Examples" in html and "workers" in html
