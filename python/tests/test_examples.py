"""The examples in python/examples run and print what they promise.

Each runs as a subprocess of this interpreter, with this environment
(PYTHONPATH included) and -X dev, so that a ResourceWarning (an unclosed
link or socket) shows on stderr.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, timeout=120):
    r = subprocess.run(
        [sys.executable, "-X", "dev", str(EXAMPLES / name), *args],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ), cwd=str(EXAMPLES))
    return r


def party_lines(out, n):
    lines = {}
    for line in out.splitlines():
        m = re.match(r"P(\d+): (.*)$", line)
        if m:
            lines[int(m.group(1))] = m.group(2)
    assert sorted(lines) == list(range(n)), out
    return lines


def sha(line):
    m = re.search(r"sha256=([0-9a-f]{16})\b", line)
    assert m, line
    return m.group(1)


def test_http_link_three_processes():
    r = run_example("http_link.py", timeout=150)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "http_link: OK 3 parties" in r.stdout, r.stdout
    ports = re.search(r"services on 127\.0\.0\.1 ports \[(\d+), (\d+), (\d+)\]",
                      r.stdout)
    assert ports, r.stdout
    lines = party_lines(r.stdout, 3)
    for rank, line in lines.items():
        assert f"port={ports.group(rank + 1)} " in line, line
        assert "p2p=ok" in line and "all_gather=ok" in line, line
    assert len({sha(line) for line in lines.values()}) == 1, lines
    assert "Warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("n", [2, 3])
def test_spu_channel_through_compat(n):
    r = run_example("spu_channel.py", "--parties", str(n), timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"spu_channel: OK {n} parties" in r.stdout, r.stdout
    lines = party_lines(r.stdout, n)
    for line in lines.values():
        assert f"world_size={n} " in line, line
        for check in ("p2p=ok", "all_gather=ok", "recv_timeout=ok"):
            assert check in line, line
    assert len({sha(line) for line in lines.values()}) == 1, lines
    assert "Warning" not in r.stderr, r.stderr
