"""The Python example of README.md runs as printed there."""

import os
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example(tmp_path):
    text = README.read_text()
    m = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text,
                  re.S)
    assert m, "README.md has no <!-- python-example --> block"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    r = subprocess.run([sys.executable, "-X", "dev", str(script)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "python example: ok" in r.stdout
    assert "Warning" not in r.stderr, r.stderr
