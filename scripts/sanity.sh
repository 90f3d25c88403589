#!/usr/bin/env bash
# ansible-test sanity needs the collection at ansible_collections/fleetboot/kexec (a real
# directory: it resolves symlinks). Copy the files git knows (plus new ones) there and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
dest=.build/sanity/ansible_collections/fleetboot/kexec
rm -rf .build/sanity && mkdir -p "$dest"
# Not tests/fixtures/sysroots/: machines' /proc and /sys recorded byte for byte (binary device-tree
# properties, file names like `auto-boot?`) and the busybox init that recorded some of them; data
# the tests read, not code, and never part of the built collection (galaxy.yml build_ignore).
git ls-files -co --exclude-standard -z -- . ':!tests/fixtures/sysroots' | xargs -0 cp --parents -t "$dest"
# ansible-test bootstraps pip in its sanity venvs from a script it downloads; provide ours.
pipv=$("$repo/.venv/bin/python" -c 'import re, ansible_test._internal.python_requirements as m, inspect; print(re.search(r"pip=.(\d+\.\d+)", inspect.getsource(m)).group(1))')
mkdir -p ~/.ansible/test/cache
cp scripts/ansible_test_get_pip.py ~/.ansible/test/cache/"get_pip_${pipv//./_}.py"
cd "$dest"
git init -q . && git add -A >/dev/null 2>&1   # ansible-test lists files through git
py=$("$repo/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# shellcheck disable=SC2086  # SANITY_ARGS holds several options
exec "$repo/.venv/bin/ansible-test" sanity --local --python "$py" --color no ${SANITY_ARGS:-}
