"""Molecule scenario `kdump` (role kdump on one 2 GiB lab VM: converge, idempotence, verify)."""

from .molecule_scenario import run_scenario


def test_molecule_kdump_scenario():
    run_scenario("kdump")
