#!/usr/bin/env bash
# What a user installs is what we test: build the collection, install the tarball into an empty
# path, and run ansible-test sanity and units inside the installed tree (units under Python 3.8
# too when an interpreter is there: the host-side code's oldest Python). Prints the tarball's
# entry count and size.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=$repo/.venv
"$venv/bin/ansible-galaxy" collection build --force --output-path .build/dist >/dev/null
version=$(sed -n 's/^version: *//p' galaxy.yml)
tarball=.build/dist/fleetboot-kexec-$version.tar.gz
echo "installed-check: $tarball: $(tar -tzf "$tarball" | wc -l) entries, $(stat -c %s "$tarball") bytes"
if tar -tzf "$tarball" | grep -E '(^|/)(lab|tests/e2e|tests/fixtures|benchmarks|scripts)/' >/dev/null; then
    echo "installed-check: the tarball ships developer material:" >&2
    tar -tzf "$tarball" | grep -E '(^|/)(lab|tests/e2e|tests/fixtures|benchmarks|scripts)/' | head >&2
    exit 1
fi
root=$repo/.build/installed
rm -rf "$root" && mkdir -p "$root"
# --force: without it ansible-galaxy may find the same version on ANSIBLE_COLLECTIONS_PATH (the
# repo link) and install nothing.
"$venv/bin/ansible-galaxy" collection install --force --no-deps -p "$root" "$tarball" >/dev/null
dest=$root/ansible_collections/fleetboot/kexec
pipv=$("$venv/bin/python" -c 'import re, ansible_test._internal.python_requirements as m, inspect; print(re.search(r"pip=.(\d+\.\d+)", inspect.getsource(m)).group(1))')
mkdir -p ~/.ansible/test/cache
cp scripts/ansible_test_get_pip.py ~/.ansible/test/cache/"get_pip_${pipv//./_}.py"
cd "$dest"
git init -q . && git add -A >/dev/null 2>&1   # ansible-test lists files through git
py=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$venv/bin/ansible-test" sanity --local --python "$py" --color no
"$venv/bin/ansible-test" units --local --python "$py" --color no
py38=$(find "$HOME/.pyenv/versions" -maxdepth 3 -path '*/3.8.*/bin/python3.8' 2>/dev/null | sort | head -1 || true)
if [ -n "$py38" ]; then
    # ansible-test makes a Python 3.8 venv with its own pinned pytest and runs the shipped tests.
    PATH=$(dirname "$py38"):$PATH "$venv/bin/ansible-test" units --venv --python 3.8 --color no
else
    echo "installed-check: no Python 3.8 here: the units ran under $py only"
fi
