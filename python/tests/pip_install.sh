#!/usr/bin/env bash
# pip_install.sh SRC PYTHON
#
# `pip install --no-build-isolation` from a copy of the checkout, into a
# target folder, with no network; then the installed module runs a link.
set -euo pipefail
src=$1
py=$2
if ! "$py" -m pip --version >/dev/null 2>&1; then
	echo "SKIP: pip is not installed for $py (Debian: python3-pip)"
	exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tagwire-pip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
for f in CMakeLists.txt cmake include src tools python setup.py \
	pyproject.toml README.md; do
	cp -a "$src/$f" "$tmp/src/"
done
rm -rf "$tmp/src/python/tagwire.egg-info" "$tmp/src/_build"
PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install -q \
	--no-build-isolation --no-deps --target "$tmp/site" "$tmp/src" \
	2> >(grep -v "Running pip as the 'root' user" >&2)
test -f "$tmp/site/tagwire/py.typed"
ls "$tmp/site/tagwire/"_tagwire*.so >/dev/null
cd "$tmp"
PYTHONPATH="$tmp/site" "$py" - <<'PY'
import threading
import tagwire
assert tagwire.__file__.startswith(__import__("os").getcwd()), tagwire.__file__
d = tagwire.Desc("pip")
d.add_party("a", "mem://pip-a")
d.add_party("b", "mem://pip-b")
links = [None, None]
def make(r):
    links[r] = tagwire.create(d, r)
ts = [threading.Thread(target=make, args=(r,)) for r in range(2)]
for t in ts: t.start()
for t in ts: t.join()
links[0].send(1, "t", b"from a pip install")
got = links[1].recv(0, "t")
assert got == b"from a pip install", got
for l in links: l.abort()
for l in links: l.close()
print("pip install: ok,", tagwire.__file__)
PY
