#!/usr/bin/env bash
# Fast local lint of what ansible-test sanity's pep8 and pylint would flag most often (pycodestyle
# with ansible-test's settings, pyflakes): seconds instead of minutes. `make sanity` is the real check.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m pycodestyle --max-line-length 160 --ignore E402,W503,W504,E741 plugins tests lab benchmarks scripts purgatory
"$py" -m pyflakes plugins tests lab benchmarks scripts purgatory
