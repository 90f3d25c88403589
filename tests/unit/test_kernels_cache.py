"""tests/kernels.py: a kernel that cannot be fetched is a skip for a developer without network,
and an error under `make test` (FLEETBOOT_REQUIRE_KERNELS=1)."""

import pytest

from tests import kernels


@pytest.fixture
def no_mirror(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEETBOOT_CACHE", str(tmp_path))

    def refuse(version, workdir, unsigned=False):
        raise kernels.KernelUnavailable("could not download linux-image-%s (test)" % version)
    monkeypatch.setattr(kernels, "_download", refuse)
    return tmp_path


def test_unavailable_is_a_kernel_unavailable_by_default(no_mirror, monkeypatch):
    monkeypatch.delenv("FLEETBOOT_REQUIRE_KERNELS", raising=False)
    with pytest.raises(kernels.KernelUnavailable):
        kernels.kernel_package("6.1.0-99-arm64")
    assert not (no_mirror / "6.1.0-99-arm64").exists()


def test_required_kernels_raise_what_a_skip_does_not_catch(no_mirror, monkeypatch):
    monkeypatch.setenv("FLEETBOOT_REQUIRE_KERNELS", "1")
    with pytest.raises(kernels.RequiredKernelUnavailable) as err:
        try:
            kernels.kernel_package("6.1.0-99-arm64")
        except kernels.KernelUnavailable:  # what the tests that skip catch
            pytest.fail("a required kernel was turned into a skip")
    assert "could not download linux-image-6.1.0-99-arm64" in str(err.value)
