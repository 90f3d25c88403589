# fleetboot.kexec developer commands. `make demo` and `make test` do everything on a fresh
# Debian machine: system packages (make deps), the venv (make venv), the lab image, the VMs.

SHELL       := /bin/bash
PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
REQS        := requirements-dev.txt
COLL_ROOT   := .build/collections
COLL_LINK   := $(COLL_ROOT)/ansible_collections/fleetboot/kexec
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/$(COLL_ROOT)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Parallel VM tests: each e2e module brings its own fleet up; 2 workers fit 2 cores / 24 GiB.
E2E_WORKERS ?= 2
# The lab test files `make e2e` (and `make test`) run: all of them unless narrowed, e.g.
#   make test E2E_FILES="tests/e2e/test_kdump_file.py tests/e2e/test_kexec_reboot.py"
E2E_FILES   ?= tests/e2e

.PHONY: help deps venv collection-link unit e2e test demo lint sanity build-collection purgatory purgatory-check molecule bench clean distclean ee-check py38-check release-checks installed-check

help:
	@echo "make demo   - build the lab, boot a VM fleet, show each host's kernel, shut it down"
	@echo "make test   - every test: unit, purgatory check, sanity, lab e2e (VMs), molecule"
	@echo "make lint   - ansible-test sanity, ansible-lint (production), antsibull-docs and antsibull-changelog lint"
	@echo "make py38-check - host-side code against Python 3.8 (vermin; a real 3.8 too when there is one)"
	@echo "make ee-check   - the execution-environment definition through ansible-builder create/introspect"
	@echo "make deps   - install the system packages the lab needs (apt-get, root)"
	@echo "make venv   - the .venv with pinned ansible-core, paramiko, pyelftools, pytest..."

deps:
	@scripts/deps.sh

$(VENV)/.stamp: $(REQS)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r $(REQS)
	touch $@

venv: $(VENV)/.stamp

collection-link:
	@mkdir -p $(dir $(COLL_LINK))
	@[ -L $(COLL_LINK) ] || ln -sfn $(CURDIR) $(COLL_LINK)

unit: deps venv collection-link
	$(VPY) -m pytest tests/unit -q -n 2 -p no:cacheprovider --junitxml=.build/junit-unit.xml; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "unit: no tests collected"; rc=0; fi; exit $$rc

e2e: deps venv collection-link
	$(VPY) -m pytest $(E2E_FILES) -q -n $(E2E_WORKERS) --dist loadfile -p no:cacheprovider -rA --junitxml=.build/junit-e2e.xml

sanity: deps venv
	@scripts/sanity.sh

# The roles through every molecule scenario (create/destroy use the lab): default (kexec_upgrade,
# two VMs) and kdump (one 2 GiB VM). `make test` runs each as an e2e test file
# (tests/e2e/test_molecule_<scenario>.py), beside the other lab files on the xdist workers.
molecule: deps venv collection-link
	MOLECULE_GLOB='extensions/molecule/*/molecule.yml' $(VENV)/bin/molecule test --all

# The shipped purgatory module must match its sources (rebuilt and compared when gcc is the same).
purgatory-check: deps venv
	$(VPY) purgatory/build.py --check

purgatory: deps venv
	$(VPY) purgatory/build.py

test: deps venv collection-link
	@rm -f .build/junit-*.xml
	@# The lab images (x86_64, arm64, ppc64le) build first, in parallel and in the background, while
	@# the unit tests run; each logs to .build/lab-build-<arch>.out (cached: seconds when warm).
	$(VPY) -m lab build --arch all --log-dir .build > .build/lab-build.out 2>&1 & echo $$! > .build/lab-build.pid
	@# Every unit test must run here: a kernel download that fails is an error, not a skip.
	FLEETBOOT_REQUIRE_KERNELS=1 $(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory purgatory-check
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory release-checks
	@wait_pid=$$(cat .build/lab-build.pid); while kill -0 $$wait_pid 2>/dev/null; do sleep 2; done; \
	  cat .build/lab-build.out .build/lab-build-*.out 2>/dev/null
	@# The lab files, molecule scenarios included, longest first (tests/e2e/scheduling.py).
	$(MAKE) --no-print-directory e2e
	@# One closing line for CI: pytest's reports added up.
	@$(VPY) scripts/test_summary.py '.build/junit-*.xml'

demo: deps venv collection-link
	$(VPY) -m lab.demo

lint: deps venv collection-link purgatory-check
	$(VPY) -m compileall -q plugins lab tests benchmarks
	@scripts/sanity.sh
	$(MAKE) --no-print-directory release-checks

# What a user installs and an Ansible maintainer checks, without the lab (part of `make test`):
# ansible-lint (production profile), the docs and changelog linters, Python 3.8, the execution
# environment definition, and sanity plus unit tests inside the built, installed collection.
release-checks: deps venv collection-link
	@# Without ANSIBLE_COLLECTIONS_PATH ansible-lint runs isolated: it installs this collection into
	@# the project's .ansible/ (ignored by git and by the galaxy build), not into ~/.ansible.
	env -u ANSIBLE_COLLECTIONS_PATH $(VENV)/bin/ansible-lint --profile production
	$(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs .
	$(VENV)/bin/antsibull-changelog lint
	$(MAKE) --no-print-directory py38-check
	$(MAKE) --no-print-directory ee-check
	$(MAKE) --no-print-directory installed-check

installed-check: venv
	@scripts/installed_check.sh

# Host-side code (plugins/module_utils, plugins/modules) must run on Python 3.8: vermin checks every
# file statically; where a real 3.8 interpreter exists (pyenv's on the project machines, or
# PY38=/path/to/python3.8) it also compiles every file, imports every loader module and reads
# recorded hosts with it. Nothing is written into the tree (no __pycache__).
PY38 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8.*/bin/python3.8) $(shell command -v python3.8 2>/dev/null))
py38-check: venv
	$(VENV)/bin/vermin --target=3.8- --no-tips --violations --eval-annotations plugins/module_utils plugins/modules
	@if [ -z "$(PY38)" ]; then echo "py38-check: no Python 3.8 interpreter here: vermin only"; exit 0; fi; \
	  set -e; echo "py38-check: $$($(PY38) --version) at $(PY38)"; \
	  PYTHONDONTWRITEBYTECODE=1 $(PY38) -c 'import sys, glob; [compile(open(p, "rb").read(), p, "exec") for p in glob.glob("plugins/module_utils/**/*.py", recursive=True) + glob.glob("plugins/modules/*.py")]; print("compiled under", sys.version.split()[0])'; \
	  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=plugins/module_utils $(PY38) -c 'import importlib, pkgutil, kexec; names = [m.name for m in pkgutil.walk_packages(kexec.__path__, "kexec.")]; [importlib.import_module(n) for n in names]; print("imported", len(names), "loader modules")'; \
	  for s in lab-seabios-pc-2g-crash ovmf-q35-2g-crash-sb; do \
	    PYTHONDONTWRITEBYTECODE=1 $(PY38) bin/fleetboot-kexec status --json --sysroot tests/fixtures/sysroots/$$s > /dev/null; done; \
	  echo "py38-check: fleetboot-kexec status read 2 recorded hosts under Python 3.8"

# The execution environment: the built collection's own EE needs (meta/execution-environment.yml)
# as ansible-builder introspects them, and execution-environment.yml through `ansible-builder
# create` (the build context; building the image needs podman or docker with an engine).
COLL_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
EE_DIR      := .build/ee
ee-check: venv build-collection
	rm -rf $(EE_DIR) && mkdir -p $(EE_DIR)
	$(VENV)/bin/ansible-galaxy collection install --force --no-deps -p $(EE_DIR)/collections .build/dist/fleetboot-kexec-$(COLL_VERSION).tar.gz
	$(VENV)/bin/ansible-builder introspect --sanitize $(EE_DIR)/collections | tee $(EE_DIR)/introspect.txt
	grep -q "^python: \[\]" $(EE_DIR)/introspect.txt
	grep -q "openssh-clients \[platform:rpm\]  # from collection fleetboot.kexec" $(EE_DIR)/introspect.txt
	$(VENV)/bin/ansible-builder create -f execution-environment.yml -c $(EE_DIR)/context --output-filename Containerfile
	grep -qx "  version: $(COLL_VERSION)" $(EE_DIR)/context/_build/requirements.yml || \
	  { echo "ee-check: execution-environment.yml does not pin fleetboot.kexec $(COLL_VERSION)"; exit 1; }
	grep -q "ansible-galaxy collection install" $(EE_DIR)/context/Containerfile
	@echo "ee-check: build context in $(EE_DIR)/context (Containerfile); no container engine is needed for this check"

build-collection: venv
	$(VENV)/bin/ansible-galaxy collection build --force --output-path .build/dist

bench: deps venv collection-link
	$(VPY) benchmarks/load_speed.py
	$(VPY) benchmarks/reboot_time.py
	$(VPY) benchmarks/kdump_time.py

clean:
	-$(VPY) -m lab down 2>/dev/null
	rm -rf .build .pytest_cache

distclean: clean
	rm -rf $(VENV) .lab
