"""lab/debian.py's downloads through a private apt configuration, with apt-get replaced by a
recording fake (no network here): what it runs, and what it says when a package cannot be had."""

import os

import pytest

from lab import debian

# What apt-get update printed on 2026-12-05 (deb.debian.org's ppc64el security index did not
# match its signed Release file).
STALE_INDEX = (
    "Get:3 http://deb.debian.org/debian-security bookworm-security InRelease [34.8 kB]\n"
    "Err:4 http://deb.debian.org/debian-security bookworm-security/main ppc64el Packages\n"
    "  File has unexpected size (367892 != 368280). Mirror sync in progress? [IP: 203.0.113.80 80]\n"
    "E: Failed to fetch http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-ppc64el/Packages.xz"
    "  File has unexpected size (367892 != 368280). Mirror sync in progress?\n"
    "E: Some index files failed to download. They have been ignored, or old ones used instead.\n")


class FakeApt:
    """apt-get: `download` makes <name>_1_<arch>.deb for names in ``known`` (after an update
    when ``known_after_update``); `update` returns ``update``."""

    def __init__(self, known=(), known_after_update=(), update=(0, "")):
        self.known, self.later, self.update = set(known), set(known_after_update), update
        self.calls = []

    def __call__(self, options, args, cwd=None):
        self.calls.append(args[0])
        if args[0] == "update":
            if self.update[0] == 0:
                self.known |= self.later
            return self.update
        name = args[-1]
        if name in self.known:
            open(os.path.join(cwd, name + "_1_ppc64el.deb"), "wb").close()
            return 0, ""
        return 100, "E: Unable to locate package %s\n" % name


@pytest.fixture
def apt(monkeypatch):
    def install(fake):
        monkeypatch.setattr(debian, "_apt", fake)
        monkeypatch.setattr(debian.os.path, "exists",
                            lambda p, real=os.path.exists: True if p == "/usr/bin/apt-get" else real(p))
        return fake
    return install


def test_lists_are_refreshed_only_when_a_name_does_not_resolve(apt, tmp_path):
    fake = apt(FakeApt(known=["a"], known_after_update=["b-unsigned"]))
    paths = debian.download("ppc64el", ["a", ("b", "b-unsigned")], str(tmp_path / "d"), str(tmp_path / "root"))
    assert [os.path.basename(p) for p in paths] == ["a_1_ppc64el.deb", "b-unsigned_1_ppc64el.deb"]
    assert fake.calls == ["download", "download", "download", "update", "download", "download"]


def test_a_stale_mirror_index_is_named_as_the_cause_with_what_to_do(apt, tmp_path):
    apt(FakeApt(update=(100, STALE_INDEX)))
    with pytest.raises(debian.PackageUnavailable) as err:
        debian.download("ppc64el", [("linux-image-6.1.0-56-powerpc64le",)], str(tmp_path / "d"), str(tmp_path / "r"))
    first = str(err.value).splitlines()[0]
    assert first.startswith("could not download linux-image-6.1.0-56-powerpc64le for ppc64el: apt-get update could not fetch")
    assert "Mirror sync in progress?" in first and "FLEETBOOT_LAB_SECURITY_MIRROR" in first


def test_an_unknown_name_after_a_good_update_says_so(apt, tmp_path):
    apt(FakeApt())
    with pytest.raises(debian.PackageUnavailable) as err:
        debian.download("arm64", ["linux-image-9.9.9-arm64"], str(tmp_path / "d"), str(tmp_path / "r"))
    assert str(err.value).startswith("could not download linux-image-9.9.9-arm64 for arm64 (no such package in bookworm")


def test_the_private_configuration_retries_and_keeps_off_the_machines_apt(tmp_path):
    options = debian.foreign_apt_options("arm64", str(tmp_path))
    pairs = dict(o.split("=", 1) for o in options[1::2])
    assert pairs["Acquire::Retries"] == "3" and pairs["APT::Architectures"] == "arm64"
    assert pairs["Dir::Etc::SourceParts"] == "/dev/null" and pairs["Dir::State::Lists"].startswith(str(tmp_path))
    with open(pairs["Dir::Etc::SourceList"]) as f:
        assert f.read().count("bookworm") == 3
