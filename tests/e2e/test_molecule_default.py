"""Molecule scenario `default` (role kexec_upgrade on two lab VMs: converge, idempotence, verify)."""

from .molecule_scenario import run_scenario


def test_molecule_default_scenario():
    run_scenario("default")
