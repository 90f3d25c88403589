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

.PHONY: help deps venv collection-link unit e2e test demo lint sanity build-collection purgatory purgatory-check molecule bench clean distclean

help:
	@echo "make demo   - build the lab, boot a VM fleet, show each host's kernel, shut it down"
	@echo "make test   - every test: unit, purgatory check, sanity, lab e2e (VMs), molecule"
	@echo "make lint   - ansible-test sanity + python compile checks"
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
	$(VPY) -m pytest tests/e2e -q -n $(E2E_WORKERS) --dist loadfile -p no:cacheprovider -rA --junitxml=.build/junit-e2e.xml

sanity: deps venv
	@scripts/sanity.sh

# The roles through every molecule scenario (create/destroy use the lab): default (kexec_upgrade,
# two VMs) and kdump (one 2 GiB VM). `make test` runs each as an e2e test file
# (tests/e2e/test_molecule_<scenario>.py), beside the other lab files on the xdist workers.
molecule: deps venv collection-link
	$(VENV)/bin/molecule test --all

# The shipped purgatory module must match its sources (rebuilt and compared when gcc is the same).
purgatory-check: deps venv
	$(VPY) purgatory/build.py --check

purgatory: deps venv
	$(VPY) purgatory/build.py

test: deps venv collection-link
	@rm -f .build/junit-*.xml
	@# The lab image build starts first, in the background, while the unit tests run.
	$(VPY) -m lab build > .build/lab-build.out 2>&1 & echo $$! > .build/lab-build.pid
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory purgatory-check
	$(MAKE) --no-print-directory sanity
	@wait_pid=$$(cat .build/lab-build.pid); while kill -0 $$wait_pid 2>/dev/null; do sleep 2; done; \
	  cat .build/lab-build.out
	@# The lab files, molecule scenarios included, longest first (tests/e2e/scheduling.py).
	$(MAKE) --no-print-directory e2e
	@# One closing line for CI: pytest's reports added up.
	@$(VPY) scripts/test_summary.py '.build/junit-*.xml'

demo: deps venv collection-link
	$(VPY) -m lab.demo

lint: deps venv purgatory-check
	$(VPY) -m compileall -q plugins lab tests benchmarks
	@scripts/sanity.sh

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
