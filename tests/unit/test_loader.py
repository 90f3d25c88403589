"""Orchestration: method choice per host state, fallback rules, nothing loaded on any error,
segments handed over as mappings, the test-only corruption hook, and a real Debian kernel
planned end to end on the recorded fixture sysroots."""

import errno
import hashlib
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cmdline as kcmdline
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import policy
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import (
    ImageFormatError, KexecError, PlanError, PurgatoryError, SignatureError, SyscallError)
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.crash.facts import CrashFacts
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import MemoryMap, Range
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
from tests.unit.conftest import newc_initrd  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")


RAM = [Range(0, 0x9F000), Range(0x100000, 0x80000000)]
CRASH = Range(0x6D000000, 0x7D000000, "Crash kernel")


def make_host(**over):
    fields = dict(arch="x86_64", release="6.1.0-56-amd64", cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda ro",
                  memory_map=MemoryMap(RAM), crash_region=CRASH, lockdown="none", kexec_load_disabled=False,
                  efi=False, secure_boot=False, kexec_loaded=False, kexec_crash_loaded=False,
                  mem_total=0x80000000, syscalls=None,
                  crash_facts=CrashFacts([(0, 0x7E03A400, 368)], (0x1202000, 0x1024), ram=RAM))
    fields.update(over)
    return Host(**fields)


class StubImage:
    """A stand-in image format: kernel at 16 MiB up, initrd high, a boot_params page with the cmdline."""

    def __init__(self):
        self.entry64 = None
        self.boot_params_addr = None
        self.warnings = []
        self.buffers = {}


class StubStages(loader.Stages):
    """Real Plan and purgatory; a synthetic image format (any bytes are a 'kernel')."""

    def __init__(self, fail_at=None):
        self.fail_at = fail_at

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None):
        if self.fail_at == "image":
            raise ImageFormatError("stub: not a kernel")
        img = StubImage()
        bp = plan.add_segment("boot_params", bytearray(cmdline.encode() + b"\0"), memsz=4096,
                              min_addr=0x3000, top_down=True)
        k = plan.add_segment("kernel", memoryview(buf), memsz=len(buf) + 0x10000, align=0x200000,
                             min_addr=0x1000000, top_down=True)
        img.buffers["kernel"] = k.buf
        if initrd is not None:
            i = plan.add_segment("initrd", memoryview(initrd), min_addr=0x1000000, top_down=True)
            img.buffers["initrd"] = i.buf
        if self.fail_at == "plan":
            plan.add_segment_at("bogus", b"x" * 10, 0xFFFFFFFFF000, 0x1000)  # not in RAM: check() refuses
        img.entry64 = k.mem + 0x200
        img.boot_params_addr = bp.mem
        return img

    def check_file_load(self, buf, host):
        if self.fail_at == "image":
            raise ImageFormatError("stub: not a kernel")

    def link_purgatory(self, plan, image, host, crash=None):
        if self.fail_at == "purgatory":
            raise PurgatoryError("stub: cannot link")
        return super(StubStages, self).link_purgatory(plan, image, host, crash=crash)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


# -- Request and command lines --------------------------------------------------------------------

def test_request_is_a_plain_value():
    r = Request("/k", initrd="/i", cmdline="quiet", kind="crash", method="file")
    assert r == Request(**r.to_dict())
    assert r.replace(method="classic").method == "classic" and r.method == "file"
    for bad in (dict(kind="warm"), dict(method="fast")):
        with pytest.raises(KexecError):
            Request("/k", **bad)
    # Nothing can jump back yet: refused by name, whatever the method.
    for method in ("auto", "classic", "file"):
        with pytest.raises(KexecError, match="preserve_context .*not supported yet"):
            Request("/k", kind="preserve_context", method=method)
    with pytest.raises(KexecError, match="--kernel"):
        Request("")


def test_reuse_cmdline_drops_boot_only_options():
    cur = 'BOOT_IMAGE=/boot/vmlinuz-6.1 root=/dev/vda1 ro crashkernel=256M elfcorehdr=0x1000 foo="a b" quiet'
    assert kcmdline.reuse_cmdline(cur, "crash") == 'root=/dev/vda1 ro foo="a b" quiet'
    # A normal kexec keeps crashkernel= so the next kernel reserves the kdump region again.
    assert kcmdline.reuse_cmdline(cur, "normal") == 'root=/dev/vda1 ro crashkernel=256M foo="a b" quiet'
    assert kcmdline.split_cmdline(' a  b="c d"  e ') == ["a", 'b="c d"', "e"]
    assert kcmdline.join_cmdline("a b", "", " c ") == "a b c"


# -- method selection -----------------------------------------------------------------------------

@pytest.mark.parametrize("state,expected", [
    (dict(), ["classic"]),
    (dict(lockdown="integrity"), ["file"]),
    (dict(lockdown="confidentiality"), ["file"]),
    (dict(lockdown="none", secure_boot=True), ["file", "classic"]),
    (dict(lockdown="integrity", secure_boot=True), ["file"]),
    (dict(syscalls={"kexec_load": False, "kexec_file_load": True}), ["file"]),
    (dict(syscalls={"kexec_load": True, "kexec_file_load": False}), ["classic"]),
    (dict(lockdown=None, secure_boot=None), ["classic"]),
])
def test_auto_method_per_host_state(state, expected):
    assert policy.choose_methods("auto", make_host(**state)) == expected


def test_explicit_methods_are_obeyed_where_the_host_allows_them():
    assert policy.choose_methods("classic", make_host()) == ["classic"]
    assert policy.choose_methods("file", make_host()) == ["file"]
    assert policy.choose_methods("classic", make_host(secure_boot=True)) == ["classic"]  # soft: may work


@pytest.mark.parametrize("method,state,reason", [
    ("classic", dict(lockdown="integrity"), "kernel lockdown is integrity"),
    ("classic", dict(lockdown="confidentiality"), "kernel lockdown is confidentiality"),
    ("classic", dict(kexec_load_disabled=True), "kexec is disabled on this host"),
    ("classic", dict(syscalls={"kexec_load": False, "kexec_file_load": True}), "without kexec_load"),
    ("file", dict(syscalls={"kexec_load": True, "kexec_file_load": False}), "without kexec_file_load"),
    ("file", dict(kexec_load_disabled=True), "kexec is disabled on this host"),
])
def test_explicit_method_the_host_forbids_is_refused_with_the_status_reason(method, state, reason):
    host = make_host(**state)
    with pytest.raises(policy.MethodError, match=reason):
        policy.choose_methods(method, host)
    if method == "classic" and "disabled" not in reason:
        assert reason in loader.status(host)["classic_refused"]


def test_auto_when_neither_syscall_can_work():
    host = make_host(kexec_load_disabled=True)
    with pytest.raises(policy.MethodError, match="until the next reboot; reboot it through the firmware"):
        policy.choose_methods("auto", host)
    assert loader.status(host)["auto_method"] is None


# -- loading through the fake ---------------------------------------------------------------------

def test_classic_load_hands_mappings_to_kexec_load(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls()
    before = open_fds()
    report = loader.load(Request(kernel, initrd, "root=/dev/vda"), fake, make_host(), stages=StubStages())
    assert open_fds() == before  # files closed again
    assert fake.names() == ["kexec_load"]
    call = fake.calls[0]
    assert call["flags"] == sc.KEXEC_ARCH_X86_64
    assert call["entry"] == report["entry"]
    by_mem = {s["mem"]: s for s in call["segments"]}
    whats = {s["what"]: s for s in report["segments"]}
    assert set(whats) == {"boot_params", "kernel", "initrd", "purgatory"}
    assert whats["kernel"]["sha256"] == sha(kernel) == by_mem[whats["kernel"]["mem"]]["sha256"]
    assert whats["initrd"]["sha256"] == sha(initrd) == by_mem[whats["initrd"]["mem"]]["sha256"]
    assert report["method"] == "classic" and report["loaded"] and not report["dry_run"]
    assert report["entry"] == whats["purgatory"]["mem"] or \
        whats["purgatory"]["mem"] <= report["entry"] < whats["purgatory"]["mem"] + whats["purgatory"]["memsz"]


def test_segment_buffers_are_private_mappings_not_copies(files):
    kernel, initrd = files
    seen = []

    class Spy(sc.FakeSyscalls):
        def _raw_kexec_load(self, entry, segments, flags):
            for s in segments:
                if s.what in ("kernel", "initrd"):
                    mv = memoryview(s.buf)
                    seen.append((s.what, mv.readonly, type(mv.obj).__name__))
                    mv.release()
            return super(Spy, self)._raw_kexec_load(entry, segments, flags)

    loader.load(Request(kernel, initrd), Spy(), make_host(), stages=StubStages())
    assert sorted(seen) == [("initrd", False, "mmap"), ("kernel", False, "mmap")]


def test_crash_load_sets_on_crash_and_stays_in_region(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls()
    loader.load(Request(kernel, initrd, kind="crash"), fake, make_host(), stages=StubStages())
    call = fake.calls[0]
    assert call["flags"] == sc.KEXEC_ARCH_X86_64 | sc.KEXEC_ON_CRASH
    for s in call["segments"]:
        assert CRASH.start <= s["mem"] and s["mem"] + s["memsz"] <= CRASH.end
    assert fake.loaded == {"normal": False, "crash": True}


def test_file_load_hands_the_files_to_kexec_file_load(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls()
    report = loader.load(Request(kernel, initrd, "quiet", method="file"), fake, make_host(), stages=StubStages())
    assert fake.calls == [{"call": "kexec_file_load", "flags": 0, "cmdline": "quiet",
                           "kernel_sha256": sha(kernel), "initrd_sha256": sha(initrd)}]
    # The kernel reads and verifies the files itself: a real file load does not hash them again.
    assert [(s["what"], s["mem"], s["sha256"]) for s in report["segments"]] == [
        ("kernel", None, None), ("initrd", None, None)]
    # Digests the caller already has (the module hashes both files for its record) are reported.
    report = loader.load(Request(kernel, initrd, "quiet", method="file"), sc.FakeSyscalls(), make_host(),
                         stages=StubStages(), known_digests={kernel: sha(kernel)})
    assert [s["sha256"] for s in report["segments"]] == [sha(kernel), None]
    # A dry run reads every page, as the load would: it hashes them.
    report = loader.load(Request(kernel, initrd, "quiet", method="file"), sc.FakeSyscalls(), make_host(),
                         stages=StubStages(), dry_run=True)
    assert [s["sha256"] for s in report["segments"]] == [sha(kernel), sha(initrd)]
    fake = sc.FakeSyscalls()
    loader.load(Request(kernel, None, "", kind="crash", method="file"), fake, make_host(), stages=StubStages())
    assert fake.calls[0]["flags"] == sc.KEXEC_FILE_ON_CRASH | sc.KEXEC_FILE_NO_INITRAMFS
    assert fake.calls[0]["initrd_sha256"] is None


def test_auto_on_locked_down_host_uses_file_only(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", errno.ENOEXEC)
    with pytest.raises(SyscallError) as ei:
        loader.load(Request(kernel, initrd), fake, make_host(lockdown="integrity"), stages=StubStages())
    assert ei.value.errno == errno.ENOEXEC
    assert fake.names() == ["kexec_file_load"]  # classic would be refused: not tried


@pytest.mark.parametrize("err", sorted(sc.FALLBACK_ERRNOS))
def test_auto_falls_back_to_classic_on_allowed_errnos(files, err):
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", err)
    report = loader.load(Request(kernel, initrd), fake, make_host(secure_boot=True), stages=StubStages())
    assert fake.names() == ["kexec_file_load", "kexec_load"]
    assert report["method"] == "classic" and report["fallback_from"]["errno"] == err


@pytest.mark.parametrize("err", [errno.EPERM, errno.EBUSY, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EBADF]
                         + sorted(sc.SIGNATURE_ERRNOS))
def test_auto_does_not_fall_back_on_other_errnos(files, err):
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", err)
    with pytest.raises(SyscallError) as ei:
        loader.load(Request(kernel, initrd), fake, make_host(secure_boot=True), stages=StubStages())
    assert ei.value.errno == err
    assert fake.names() == ["kexec_file_load"]
    if err in sc.SIGNATURE_ERRNOS:
        assert isinstance(ei.value, SignatureError)


def test_eperm_under_lockdown_from_file_is_a_signature_error_never_retried(files):
    if os.geteuid() != 0:
        pytest.skip("EPERM as non-root means 'not root'")
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", errno.EPERM)
    with pytest.raises(SignatureError, match="signed"):
        loader.load(Request(kernel, initrd), fake, make_host(lockdown="integrity", secure_boot=True),
                    stages=StubStages())
    assert fake.names() == ["kexec_file_load"]


def test_explicit_file_never_falls_back(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", errno.ENOSYS)
    with pytest.raises(SyscallError):
        loader.load(Request(kernel, initrd, method="file"), fake, make_host(secure_boot=True), stages=StubStages())
    assert fake.names() == ["kexec_file_load"]


def test_fallback_failure_mentions_both(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls().fail("kexec_file_load", errno.ENOEXEC).fail("kexec_load", errno.EBUSY)
    with pytest.raises(SyscallError) as ei:
        loader.load(Request(kernel, initrd), fake, make_host(secure_boot=True), stages=StubStages())
    assert ei.value.errno == errno.EBUSY and "tried kexec_file_load first" in str(ei.value)


@pytest.mark.parametrize("case", ["missing-kernel", "missing-initrd", "empty-initrd", "directory", "image",
                                  "plan", "purgatory", "no-crash-region", "corrupt-unknown"])
@pytest.mark.parametrize("method", ["classic", "file", "auto"])
def test_any_error_before_the_syscall_means_no_call(files, tmp_path, case, method):
    kernel, initrd = files
    req = Request(kernel, initrd, method=method)
    host = make_host()
    stages = StubStages()
    environ = {}
    if case == "missing-kernel":
        req = req.replace(kernel=str(tmp_path / "nope"))
    elif case == "missing-initrd":
        req = req.replace(initrd=str(tmp_path / "nope"))
    elif case == "empty-initrd":
        (tmp_path / "empty").write_bytes(b"")
        req = req.replace(initrd=str(tmp_path / "empty"))
    elif case == "directory":
        req = req.replace(kernel=str(tmp_path))
    elif case in ("image", "plan", "purgatory"):
        if method == "file":
            pytest.skip("kexec_file_load lets the kernel parse the image")
        stages = StubStages(fail_at=case)
    elif case == "no-crash-region":
        req = req.replace(kind="crash")
        host = make_host(crash_region=None)
    elif case == "corrupt-unknown":
        environ = {loader.CORRUPT_ENV: "nosuchsegment"}
    fake = sc.FakeSyscalls()
    before = open_fds()
    with pytest.raises(KexecError):
        loader.load(req, fake, host, stages=stages, environ=environ)
    assert fake.calls == []
    assert fake.loaded == {"normal": False, "crash": False}
    assert open_fds() == before


def test_plan_check_failure_lists_the_problem(files):
    kernel, initrd = files
    with pytest.raises(PlanError, match="not entirely in System RAM"):
        loader.load(Request(kernel, initrd), sc.FakeSyscalls(), make_host(), stages=StubStages("plan"))


def test_dry_run_hashes_but_calls_nothing(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls()
    report = loader.load(Request(kernel, initrd), fake, make_host(), dry_run=True, stages=StubStages())
    assert fake.calls == []
    assert report["dry_run"] and not report["loaded"]
    assert all(len(s["sha256"]) == 64 for s in report["segments"])


def test_corrupt_hook_flips_a_byte_after_digesting_without_touching_the_file(files):
    kernel, initrd = files
    clean = sc.FakeSyscalls()
    loader.load(Request(kernel, initrd), clean, make_host(), stages=StubStages())
    dirty = sc.FakeSyscalls()
    report = loader.load(Request(kernel, initrd), dirty, make_host(), stages=StubStages(),
                         environ={loader.CORRUPT_ENV: "kernel"})
    assert report["test_corrupted_segment"].startswith("kernel+")
    a, b = clean.calls[0]["segments"], dirty.calls[0]["segments"]
    kmem = [s["mem"] for s in report["segments"] if s["what"] == "kernel"][0]
    changed = [x["mem"] for x, y in zip(a, b) if x["sha256"] != y["sha256"]]
    assert changed == [kmem]  # only the kernel differs; purgatory (its digest table) is unchanged
    assert [s["sha256"] for s in a if s["mem"] == kmem] == [sha(kernel)]
    assert sha(kernel) == [s["sha256"] for s in a if s["mem"] == kmem][0]  # file on disk untouched


# -- unload / exec / status -----------------------------------------------------------------------

def test_unload_methods():
    fake = sc.FakeSyscalls()
    assert loader.unload(fake, make_host()) == {"unloaded": "normal", "method": "classic"}
    assert fake.calls[-1] == {"call": "kexec_load", "entry": 0, "flags": sc.KEXEC_ARCH_X86_64, "segments": []}
    loader.unload(fake, make_host(lockdown="integrity"), kind="crash")
    assert fake.calls[-1]["call"] == "kexec_file_load"
    assert fake.calls[-1]["flags"] == sc.KEXEC_FILE_UNLOAD | sc.KEXEC_FILE_ON_CRASH
    fake = sc.FakeSyscalls().fail("kexec_load", errno.ENOSYS)
    assert loader.unload(fake, make_host())["method"] == "file"
    assert fake.names() == ["kexec_load", "kexec_file_load"]
    fake = sc.FakeSyscalls().fail("kexec_load", errno.EBUSY)
    with pytest.raises(SyscallError):
        loader.unload(fake, make_host())
    assert fake.names() == ["kexec_load"]


@pytest.mark.parametrize("state", [False, None])
def test_exec_refuses_when_nothing_is_loaded(state):
    fake = sc.FakeSyscalls()
    with pytest.raises(KexecError, match="load"):
        loader.execute(fake, make_host(kexec_loaded=state))
    assert fake.calls == []


def test_exec_reboots_into_the_loaded_kernel(files):
    kernel, initrd = files
    fake = sc.FakeSyscalls()
    loader.load(Request(kernel, initrd), fake, make_host(), stages=StubStages())
    loader.execute(fake, make_host(kexec_loaded=True))
    assert fake.calls[-1] == {"call": "reboot", "cmd": sc.LINUX_REBOOT_CMD_KEXEC}


def test_status_reports_the_auto_method():
    st = loader.status(make_host(lockdown="integrity"))
    assert st["auto_method"] == "file" and "lockdown" in st["classic_refused"]
    assert loader.status(make_host())["auto_method"] == "classic"


# -- a real Debian kernel on the recorded sysroots ------------------------------------------------

@pytest.mark.parametrize("sysroot", ["seabios-pc-1g", "seabios-q35-2g-crash", "ovmf-q35-2g"])
def test_real_kernel_plans_and_dry_runs(debian_kernels, sysroot, tmp_path, fixed_entropy):
    pkg = debian_kernels["6.1.0-56-amd64"]
    initrd = tmp_path / "initrd"
    initrd.write_bytes(newc_initrd(1 << 20))
    host = Host.read(os.path.join(SYSROOTS, sysroot))
    req = Request(pkg.vmlinuz, str(initrd), "root=/dev/vda ro console=ttyS0", method="classic")
    with loader.make_plan(req, host) as prep:
        assert prep.plan.check() is prep.plan
        report = prep.to_dict()
    assert {s["what"] for s in report["segments"]} >= {"boot_params", "kernel", "initrd", "purgatory"}
    assert [s["sha256"] for s in report["segments"] if s["what"] == "kernel"] != [sha(pkg.vmlinuz)]  # setup code stripped
    fake = sc.FakeSyscalls()
    dry = loader.load(req, fake, host, dry_run=True)
    assert fake.calls == [] and dry["segments"] == report["segments"]


def test_real_kernel_crash_plan_stays_in_the_crash_region(debian_kernels):
    pkg = debian_kernels["6.1.0-56-amd64"]
    host = Host.read(os.path.join(SYSROOTS, "seabios-q35-2g-crash"))
    region = host.crash_region
    req = Request(pkg.vmlinuz, None, "root=/dev/vda", kind="crash", method="classic")
    with loader.make_plan(req, host) as prep:
        prep.plan.check()
        assert prep.flags & sc.KEXEC_ON_CRASH
        for s in prep.segments:
            assert region.start <= s.mem and s.mem + s.memsz <= region.end, s
        assert region.start <= prep.entry < region.end
    fake = sc.FakeSyscalls()
    loader.load(req, fake, host)
    assert fake.names() == ["kexec_load"]
    assert all(region.start <= s["mem"] and s["mem"] + s["memsz"] <= region.end for s in fake.calls[0]["segments"])


def test_real_kernel_auto_on_secure_boot_sysroot_plans_file(debian_kernels):
    pkg = debian_kernels["6.1.0-56-amd64"]
    host = Host.read(os.path.join(SYSROOTS, "ovmf-q35-2g-crash-sb"))
    fake = sc.FakeSyscalls()
    report = loader.load(Request(pkg.vmlinuz, None, "quiet"), fake, host)
    assert report["method"] == "file" and fake.names() == ["kexec_file_load"]
    assert fake.calls[0]["kernel_sha256"] == sha(pkg.vmlinuz)


def test_plan_kind_matches_request():
    plan = loader.DEFAULT_STAGES.new_plan(make_host(), "crash")
    assert isinstance(plan, Plan) and plan.kind == "crash" and plan.crash_region == CRASH
