"""kexec_load module: its main() run in-process against writable copies of recorded lab hosts,
a real Debian kernel and FakeSyscalls (no real syscall: tests/unit/conftest.py forbids them)."""

import errno
import hashlib
import json
import os
import shutil

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cmdline as kcmdline
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.syscalls import FakeSyscalls
from ansible_collections.fleetboot.kexec.plugins.modules import kexec_load
from tests.unit.conftest import newc_initrd  # noqa: E402

from tests.kernels import KernelUnavailable, kernel_package

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
BOOT_ID = "8a1c3e5f-2b4d-4f6a-9c8e-1d3f5a7b9c0e"
NEW = "6.1.0-56-amd64"
LOADED = "sys/kernel/kexec_loaded"
CRASH_LOADED = "sys/kernel/kexec_crash_loaded"

from tests.unit.module_args import patch_module_args


def run_module(main, capsys, args, check=False, **kwargs):
    """Call ``main(**kwargs)`` as Ansible would; return its result dict (``failed`` set on failure)."""
    args = dict(args)
    if check:
        args["_ansible_check_mode"] = True
    capsys.readouterr()
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            main(**kwargs)
    out = capsys.readouterr().out
    result = json.loads(out)
    assert bool(result.get("failed")) == (exc.value.code != 0), out
    return result


def make_sysroot(tmp_path, name="lab-seabios-pc-2g-crash", boot_id=BOOT_ID):
    """A writable copy of a recorded host tree, with a boot_id."""
    root = tmp_path / ("sysroot-" + name)
    shutil.copytree(os.path.join(SYSROOTS, name), str(root), symlinks=True)
    set_boot_id(str(root), boot_id)
    return str(root)


def set_boot_id(sysroot, boot_id):
    path = os.path.join(sysroot, "proc", "sys", "kernel", "random")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "boot_id"), "w") as f:
        f.write(boot_id + "\n")


def set_flag(sysroot, rel, value):
    with open(os.path.join(sysroot, rel), "w") as f:
        f.write("%d\n" % int(value))


def read_flag(sysroot, rel):
    with open(os.path.join(sysroot, rel)) as f:
        return int(f.read().strip())


class SysrootSyscalls(FakeSyscalls):
    """FakeSyscalls that also update the sysroot's kexec_loaded / kexec_crash_loaded, as the kernel
    would, so a second module run sees what the first one loaded."""

    def __init__(self, sysroot, **kwargs):
        super(SysrootSyscalls, self).__init__(**kwargs)
        self.sysroot = sysroot

    def _sync(self, err):
        if not err:
            set_flag(self.sysroot, "sys/kernel/kexec_loaded", self.loaded["normal"])
            set_flag(self.sysroot, "sys/kernel/kexec_crash_loaded", self.loaded["crash"])
        return err

    def _raw_kexec_load(self, entry, segments, flags):
        return self._sync(super(SysrootSyscalls, self)._raw_kexec_load(entry, segments, flags))

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        return self._sync(super(SysrootSyscalls, self)._raw_kexec_file_load(kernel_fd, initrd_fd, cmdline, flags))


@pytest.fixture(scope="module")
def vmlinuz():
    try:
        return kernel_package(NEW).vmlinuz
    except KernelUnavailable as err:
        pytest.skip("linux-image-%s unavailable: %s" % (NEW, str(err).splitlines()[0]))


@pytest.fixture
def sysroot(tmp_path):
    return make_sysroot(tmp_path)


@pytest.fixture
def initrd(tmp_path):
    path = tmp_path / ("initrd.img-" + NEW)
    path.write_bytes(newc_initrd(3 * 4096 + 123))
    return str(path)


@pytest.fixture
def fake(sysroot):
    return SysrootSyscalls(sysroot)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(capsys, fake, sysroot, check=False, **args):
    args.setdefault("sysroot", sysroot)
    return run_module(kexec_load.main, capsys, args, check=check, syscalls=fake)


def record(sysroot, kind="normal"):
    path = os.path.join(sysroot, "run", "fleetboot-kexec", kind + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# -- check mode -------------------------------------------------------------------------------


def test_check_mode_returns_the_plan_and_touches_nothing(capsys, fake, sysroot, vmlinuz, initrd, fixed_entropy):
    res = load(capsys, fake, sysroot, check=True, kernel=vmlinuz, initrd=initrd, reuse_cmdline=True)
    assert res["changed"] is True and not res.get("failed"), res
    assert fake.calls == []
    assert read_flag(sysroot, LOADED) == 0 and record(sysroot) is None
    plan = res["plan"]
    # The same plan `fleetboot-kexec plan --json` prints.
    host = Host.read(sysroot)
    request = Request(vmlinuz, initrd=initrd, cmdline=kcmdline.reuse_cmdline(host.cmdline), method="auto")
    with loader.make_plan(request, host) as prep:
        expected = prep.to_dict()
    assert plan == expected
    assert plan["method"] == res["method"] == "classic"
    assert res["entry"] == plan["entry"] and res["entry"] > 0
    assert res["segments"] == plan["segments"]
    assert {s["what"] for s in res["segments"]} >= {"kernel", "initrd"}
    assert res["cmdline"] == "console=ttyS0 root=/dev/vda rw crashkernel=256M"
    assert res["kernel"] == vmlinuz and res["initrd"] == initrd and res["type"] == "normal"


# -- load and idempotence ---------------------------------------------------------------------


def test_load_records_it_and_a_second_run_changes_nothing(capsys, fake, sysroot, vmlinuz, initrd):
    args = dict(kernel=vmlinuz, initrd=initrd, reuse_cmdline=True)
    res = load(capsys, fake, sysroot, **args)
    assert res["changed"] is True, res
    assert "plan" not in res
    assert fake.names() == ["kexec_load"]
    call = fake.calls[0]
    assert call["entry"] == res["entry"]
    assert [s["sha256"] for s in call["segments"]] == [s["sha256"] for s in res["segments"]]
    assert read_flag(sysroot, LOADED) == 1

    rec = record(sysroot)
    assert rec["kernel"] == vmlinuz and rec["initrd"] == initrd and rec["type"] == "normal"
    assert rec["method"] == "classic" and rec["boot_id"] == BOOT_ID
    assert rec["kernel_sha256"] == sha256(vmlinuz) == res["kernel_sha256"]
    assert rec["initrd_sha256"] == sha256(initrd) == res["initrd_sha256"]
    assert rec["cmdline_sha256"] == hashlib.sha256(res["cmdline"].encode()).hexdigest()

    again = load(capsys, fake, sysroot, **args)
    assert again["changed"] is False, again
    assert fake.names() == ["kexec_load"]  # no second syscall
    for key in ("method", "entry", "segments", "cmdline", "kernel", "initrd", "type"):
        assert again[key] == res[key], key
    # Check mode agrees: nothing to do, no plan.
    checked = load(capsys, fake, sysroot, check=True, **args)
    assert checked["changed"] is False and "plan" not in checked
    assert fake.names() == ["kexec_load"]


@pytest.mark.parametrize("what", ["cmdline", "boot_id", "unloaded behind our back", "initrd content",
                                  "method"])
def test_anything_different_loads_again(capsys, fake, sysroot, vmlinuz, initrd, what):
    args = dict(kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda rw console=ttyS0")
    assert load(capsys, fake, sysroot, **args)["changed"] is True
    if what == "cmdline":
        args["append"] = ["quiet"]
    elif what == "boot_id":
        set_boot_id(sysroot, "00000000-0000-4000-8000-000000000000")
    elif what == "unloaded behind our back":
        set_flag(sysroot, LOADED, 0)
    elif what == "initrd content":
        with open(initrd, "wb") as f:
            f.write(newc_initrd(3 * 4096 + 123))  # same size, other bytes
    else:
        args["method"] = "file"
    res = load(capsys, fake, sysroot, **args)
    assert res["changed"] is True, res
    assert len(fake.calls) == 2
    assert read_flag(sysroot, LOADED) == 1
    assert record(sysroot)["method"] == res["method"]


def test_file_method_uses_kexec_file_load(capsys, fake, sysroot, vmlinuz, initrd):
    res = load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda", method="file")
    assert res["changed"] is True and res["method"] == "file" and res["entry"] == 0
    assert fake.names() == ["kexec_file_load"]
    assert fake.calls[0]["cmdline"] == "root=/dev/vda"
    assert fake.calls[0]["kernel_sha256"] == sha256(vmlinuz) and fake.calls[0]["initrd_sha256"] == sha256(initrd)
    assert [s["mem"] for s in res["segments"]] == [None, None]
    assert load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda",
                method="file")["changed"] is False


def test_crash_kernel_goes_into_its_own_record(capsys, fake, sysroot, vmlinuz, initrd):
    res = load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, type="crash", reuse_cmdline=True,
               append=["irqpoll nr_cpus=1"])
    assert res["changed"] is True and res["type"] == "crash", res
    # crashkernel= describes the running kernel's reservation: a crash kernel must not get it.
    hdr = [s for s in res["segments"] if s["what"] == "elfcorehdr"][0]
    # The user's options first, the default capture options not already there, then the header.
    assert res["cmdline"].split() == ["console=ttyS0", "root=/dev/vda", "rw", "irqpoll", "nr_cpus=1",
                                      "reset_devices", "elfcorehdr=%#x" % hdr["mem"]]
    assert fake.calls[0]["flags"] & 1  # KEXEC_ON_CRASH
    region = Host.read(sysroot).crash_region
    assert all(region.start <= s["mem"] < region.end for s in res["segments"])
    assert read_flag(sysroot, CRASH_LOADED) == 1 and read_flag(sysroot, LOADED) == 0
    assert record(sysroot, "crash")["type"] == "crash" and record(sysroot) is None
    assert load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, type="crash", reuse_cmdline=True,
                append=["irqpoll nr_cpus=1"])["changed"] is False


# -- checksums --------------------------------------------------------------------------------


def test_right_checksums_load(capsys, fake, sysroot, vmlinuz, initrd):
    res = load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda",
               kernel_checksum="sha256:" + sha256(vmlinuz).upper(), initrd_checksum="sha256:" + sha256(initrd))
    assert res["changed"] is True and fake.names() == ["kexec_load"]


@pytest.mark.parametrize("which", ["kernel", "initrd"])
def test_checksum_mismatch_fails_with_both_values_and_loads_nothing(capsys, fake, sysroot, vmlinuz, initrd, which):
    wrong = "0" * 64
    args = dict(kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda")
    args[which + "_checksum"] = "sha256:" + wrong
    res = load(capsys, fake, sysroot, **args)
    assert res["failed"] is True
    actual = sha256(vmlinuz if which == "kernel" else initrd)
    assert "sha256:" + actual in res["msg"] and "sha256:" + wrong in res["msg"], res["msg"]
    assert which in res["msg"]
    assert fake.calls == [] and record(sysroot) is None and read_flag(sysroot, LOADED) == 0


def test_malformed_checksum_fails(capsys, fake, sysroot, vmlinuz):
    res = load(capsys, fake, sysroot, kernel=vmlinuz, kernel_checksum="md5:abc")
    assert res["failed"] is True and "sha256:<64 hex digits>" in res["msg"]
    assert fake.calls == []


# -- command lines ----------------------------------------------------------------------------


def test_reuse_cmdline_with_remove_and_append(capsys, fake, sysroot, vmlinuz, initrd):
    with open(os.path.join(sysroot, "proc", "cmdline"), "w") as f:
        f.write('BOOT_IMAGE=/boot/vmlinuz-6.1.0-54-amd64 root=/dev/vda rw console=tty0 console=ttyS0 '
                'quiet crashkernel=256M dyndbg="file foo.c +p" loglevel=3\n')
    res = load(capsys, fake, sysroot, check=True, kernel=vmlinuz, initrd=initrd, reuse_cmdline=True,
               remove=["console", "quiet", "loglevel=7", "dyndbg"],
               append=["console=ttyS0,115200 loglevel=7", "root=/dev/vda"])
    assert res["cmdline"] == "root=/dev/vda rw crashkernel=256M loglevel=3 console=ttyS0,115200 loglevel=7"
    assert res["plan"]["cmdline"] == res["cmdline"] and fake.calls == []


def test_compose_cmdline_rules():
    class H:
        cmdline = "BOOT_IMAGE=/vmlinuz a=1 b c=2 elfcorehdr=0x1000 crashkernel=128M"
    compose = kexec_load.compose_cmdline
    assert compose(H, "normal", reuse=True) == "a=1 b c=2 crashkernel=128M"
    assert compose(H, "crash", reuse=True) == "a=1 b c=2"
    assert compose(H, "normal", reuse=True, remove=["a=2", "c=2", "b"]) == "a=1 crashkernel=128M"
    assert compose(H, "normal", cmdline="x y", append=["y z", "x"]) == "x y z"
    assert compose(H, "normal", cmdline=None, append=["quiet"]) == "quiet"
    assert compose(H, "normal") == ""


def test_cmdline_and_reuse_cmdline_exclude_each_other(capsys, fake, sysroot, vmlinuz):
    res = load(capsys, fake, sysroot, kernel=vmlinuz, cmdline="root=/dev/vda", reuse_cmdline=True)
    assert res["failed"] is True and "mutually exclusive" in res["msg"]


def test_state_loaded_needs_a_kernel(capsys, fake, sysroot):
    res = load(capsys, fake, sysroot)
    assert res["failed"] is True and "kernel" in res["msg"]


# -- unload -----------------------------------------------------------------------------------


def test_unload_unloads_once_and_removes_the_record(capsys, fake, sysroot, vmlinuz, initrd):
    assert load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda")["changed"]
    assert record(sysroot) is not None

    checked = load(capsys, fake, sysroot, check=True, state="unloaded")
    assert checked["changed"] is True and fake.names() == ["kexec_load"]
    assert read_flag(sysroot, LOADED) == 1 and record(sysroot) is not None

    res = load(capsys, fake, sysroot, state="unloaded")
    assert res["changed"] is True and res["method"] == "classic" and res["type"] == "normal", res
    assert fake.names() == ["kexec_load", "kexec_load"] and fake.calls[1]["segments"] == []
    assert read_flag(sysroot, LOADED) == 0 and record(sysroot) is None

    again = load(capsys, fake, sysroot, state="unloaded")
    assert again["changed"] is False and again["method"] is None
    assert len(fake.calls) == 2
    # Loading again after the unload is a change.
    assert load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda")["changed"]


def test_unload_crash_uses_the_crash_flag(capsys, fake, sysroot):
    set_flag(sysroot, CRASH_LOADED, 1)  # loaded by someone else: still ours to unload
    res = load(capsys, fake, sysroot, state="unloaded", type="crash", method="file")
    assert res["changed"] is True and res["method"] == "file"
    assert fake.names() == ["kexec_file_load"] and fake.calls[0]["flags"] == 0x3  # UNLOAD | ON_CRASH


# -- errors -----------------------------------------------------------------------------------


def loader_message(request, host):
    with pytest.raises(KexecError) as exc:
        with loader.make_plan(request, host):
            pass
    return str(exc.value)


def test_not_a_kernel_fails_with_the_loaders_message(capsys, fake, sysroot, initrd):
    res = load(capsys, fake, sysroot, kernel=initrd, cmdline="root=/dev/vda")
    assert res["failed"] is True
    assert res["msg"] == loader_message(Request(initrd, cmdline="root=/dev/vda"), Host.read(sysroot))
    assert fake.calls == [] and record(sysroot) is None


def test_crash_without_a_crash_region_fails_with_the_loaders_message(capsys, tmp_path, vmlinuz, initrd):
    sysroot = make_sysroot(tmp_path, "lab-seabios-pc-1g")
    fake = SysrootSyscalls(sysroot)
    res = load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, type="crash", reuse_cmdline=True)
    assert res["failed"] is True and "crashkernel=" in res["msg"], res
    request = Request(vmlinuz, initrd=initrd, cmdline="x", kind="crash")
    assert res["msg"] == loader_message(request, Host.read(sysroot))
    assert fake.calls == []


def test_refused_syscall_fails_with_the_loaders_message_and_records_nothing(capsys, fake, sysroot, vmlinuz, initrd):
    fake.fail("kexec_load", errno.ENOMEM)
    res = load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda")
    assert res["failed"] is True
    assert res["msg"].startswith("kexec_load failed: Cannot allocate memory (ENOMEM)"), res["msg"]
    assert record(sysroot) is None and read_flag(sysroot, LOADED) == 0


def test_a_failed_load_drops_the_old_record(capsys, fake, sysroot, vmlinuz, initrd):
    args = dict(kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/vda")
    assert load(capsys, fake, sysroot, **args)["changed"]
    fake.fail("kexec_load", errno.EBUSY, times=1)
    assert load(capsys, fake, sysroot, kernel=vmlinuz, initrd=initrd, cmdline="root=/dev/sda")["failed"]
    assert record(sysroot) is None  # the old image may or may not be there: never vouch for it
    assert load(capsys, fake, sysroot, **args)["changed"] is True


def test_missing_kernel_file(capsys, fake, sysroot, tmp_path):
    res = load(capsys, fake, sysroot, kernel=str(tmp_path / "nope"))
    assert res["failed"] is True and "cannot read kernel" in res["msg"] and "nope" in res["msg"]


def test_unreadable_host_fails(capsys, fake, tmp_path, vmlinuz):
    res = load(capsys, fake, str(tmp_path / "missing"), kernel=vmlinuz)
    assert res["failed"] is True and "is not a directory" in res["msg"]
