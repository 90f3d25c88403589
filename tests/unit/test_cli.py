"""The host-side CLI: subcommands, JSON shape, exit codes, the launchers, and a real Debian kernel
through `plan --json` and `load --dry-run` on the recorded sysroots.  Every command that could
reach the kernel runs in-process with FakeSyscalls; subprocesses only run plan/status/dry-run."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cli
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from tests.unit.conftest import newc_initrd  # noqa: E402

from test_loader import StubStages  # noqa: E402  (same directory, on sys.path under pytest)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")


def run(argv, syscalls=None, stages=None, environ=None):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, syscalls=syscalls, stages=stages, environ=environ or {}, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def sysroot(tmp_path):
    """A writable copy of the q35 crash sysroot (tests flip kexec_loaded in it)."""
    dst = tmp_path / "root"
    shutil.copytree(os.path.join(SYSROOTS, "seabios-q35-2g-crash"), str(dst))
    return str(dst)


def test_plan_json_shape(files, sysroot):
    k, i = files
    rc, out, err = run(["plan", "--kernel", k, "--initrd", i, "--append", "quiet", "--sysroot", sysroot, "--json"],
                       stages=StubStages())
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["method"] == "classic" and isinstance(plan["entry"], int)
    assert plan["cmdline"] == "quiet"
    for s in plan["segments"]:
        assert set(s) == {"what", "mem", "memsz", "bufsz", "sha256"}
        assert isinstance(s["mem"], int) and len(s["sha256"]) == 64
    assert [s["what"] for s in plan["segments"]] == ["boot_params", "kernel", "initrd", "purgatory"]


def test_plan_text_and_reuse_cmdline(files, sysroot):
    k, i = files
    rc, out, err = run(["plan", "--kernel", k, "--reuse-cmdline", "--append", "quiet", "--sysroot", sysroot],
                       stages=StubStages())
    assert rc == 0, err
    assert "cmdline root=/dev/vda1 ro console=ttyS0,115200n8 crashkernel=256M quiet" in out
    assert "BOOT_IMAGE" not in out and "purgatory" in out
    rc, out, err = run(["plan", "--kernel", k, "--reuse-cmdline", "--crash", "--sysroot", sysroot, "--json"],
                       stages=StubStages())
    assert rc == 0, err
    plan = json.loads(out)
    hdr = [s for s in plan["segments"] if s["what"] == "elfcorehdr"][0]
    assert plan["cmdline"] == ("root=/dev/vda1 ro console=ttyS0,115200n8 irqpoll nr_cpus=1 reset_devices "
                               "elfcorehdr=%#x" % hdr["mem"])
    rc, out, err = run(["plan", "--kernel", k, "--reuse-cmdline", "--crash", "--capture-options", "nr_cpus=2 quiet",
                        "--append", "nr_cpus=4", "--sysroot", sysroot, "--json"], stages=StubStages())
    assert rc == 0, err
    assert json.loads(out)["cmdline"].split()[-3:-1] == ["nr_cpus=4", "quiet"]
    rc, out, err = run(["plan", "--kernel", k, "--capture-options", "irqpoll", "--sysroot", sysroot], stages=StubStages())
    assert rc == 1 and "--capture-options applies to crash kernels only" in err


def test_plan_method_file_reports_unplaced_segments(debian_kernels, files, sysroot):
    k, i = debian_kernels["6.1.0-56-amd64"].vmlinuz, files[1]
    rc, out, err = run(["plan", "--kernel", k, "--initrd", i, "--method", "file", "--sysroot", sysroot, "--json"])
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["method"] == "file" and plan["entry"] == 0
    assert [(s["what"], s["mem"]) for s in plan["segments"]] == [("kernel", None), ("initrd", None)]


def test_plan_method_file_checks_the_kernel_as_classic_does(files, sysroot):
    """kexec_file_load would take the bytes and fail in the kernel: the plan refuses them first."""
    k, i = files  # random bytes, not a kernel
    for method in ("file", "classic"):
        rc, out, err = run(["plan", "--kernel", k, "--initrd", i, "--method", method, "--sysroot", sysroot])
        assert rc == 1 and "unrecognised kernel image" in err and "pass the kernel" in err, (method, err)


def test_load_unload_exec_through_the_fake(files, sysroot):
    k, i = files
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--kernel", k, "--initrd", i, "--sysroot", sysroot], syscalls=fake, stages=StubStages())
    assert rc == 0, err
    assert fake.names() == ["kexec_load"]
    rc, out, err = run(["load", "--kernel", k, "--crash", "--sysroot", sysroot, "--json"], syscalls=fake,
                       stages=StubStages())
    assert rc == 0, err
    assert fake.calls[-1]["flags"] & sc.KEXEC_ON_CRASH and json.loads(out)["kind"] == "crash"
    rc, out, err = run(["unload", "--crash", "--sysroot", sysroot], syscalls=fake)
    assert rc == 0, err
    assert fake.calls[-1]["segments"] == []
    # exec refuses while the host says nothing is loaded, before any syscall
    n = len(fake.calls)
    rc, out, err = run(["exec", "--sysroot", sysroot], syscalls=fake)
    assert rc == 1 and "no kexec image is loaded" in err and "Traceback" not in err
    assert len(fake.calls) == n
    with open(os.path.join(sysroot, "sys", "kernel", "kexec_loaded"), "w") as f:
        f.write("1\n")
    rc, out, err = run(["exec", "--sysroot", sysroot], syscalls=fake)
    assert rc == 0, err
    assert fake.calls[-1] == {"call": "reboot", "cmd": sc.LINUX_REBOOT_CMD_KEXEC}


def test_dry_run_never_calls(files, sysroot):
    k, i = files
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--dry-run", "--kernel", k, "--initrd", i, "--sysroot", sysroot, "--json"],
                       syscalls=fake, stages=StubStages())
    assert rc == 0, err
    assert fake.calls == [] and json.loads(out)["dry_run"] is True


def test_status(sysroot):
    rc, out, err = run(["status", "--sysroot", os.path.join(SYSROOTS, "ovmf-q35-2g-crash-sb"), "--json"])
    assert rc == 0, err
    st = json.loads(out)
    assert st["auto_method"] == "file" and st["lockdown"] == "integrity" and st["kexec_loaded"] is False


def test_kexec_errors_exit_1_with_one_message(files, sysroot, tmp_path):
    k, i = files
    rc, out, err = run(["plan", "--kernel", str(tmp_path / "missing"), "--sysroot", sysroot])
    assert rc == 1 and out == ""
    assert err.startswith("fleetboot-kexec plan: cannot read kernel") and "Traceback" not in err
    fake = sc.FakeSyscalls().fail("kexec_load", sc.EKEYREJECTED)
    rc, out, err = run(["load", "--kernel", k, "--sysroot", sysroot], syscalls=fake, stages=StubStages())
    assert rc == 1 and "signature" in err and err.count("\n") == 1
    rc, out, err = run(["plan", "--kernel", k, "--sysroot", str(tmp_path / "nosysroot")])
    assert rc == 1 and "sysroot" in err


def test_internal_errors_say_bug_and_exit_3(files, sysroot):
    class Broken(StubStages):
        def load_image(self, *a, **kw):
            raise ZeroDivisionError("boom")
    rc, out, err = run(["plan", "--kernel", files[0], "--sysroot", sysroot], stages=Broken())
    assert rc == 3 and "bug in the loader" in err and "ZeroDivisionError" in err


@pytest.mark.parametrize("argv", [[], ["load"], ["frobnicate"], ["plan", "--kernel", "k", "--method", "fast"],
                                  ["exec", "--kernel", "k"], ["load", "--kernel", "k", "--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv, syscalls=sc.FakeSyscalls())
    assert ei.value.code == 2


# -- launchers (subprocesses: plan / status / dry-run only, never a syscall) ---------------------

def _sub(argv, env=None):
    full = dict(os.environ, **(env or {}))
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=full, cwd=REPO, timeout=120, check=False)


def test_bin_launcher_and_python_m_entry_points(debian_kernels):
    kernel = debian_kernels["6.1.0-56-amd64"].vmlinuz
    sysroot = os.path.join(SYSROOTS, "seabios-pc-1g")
    p = _sub([sys.executable, os.path.join(REPO, "bin", "fleetboot-kexec"), "status", "--sysroot", sysroot, "--json"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["auto_method"] == "classic"
    # As the lab ships it: plugins/module_utils/kexec as a top-level package `kexec`.
    p = _sub([sys.executable, "-m", "kexec.cli", "status", "--sysroot", sysroot],
             env={"PYTHONPATH": os.path.join(REPO, "plugins", "module_utils")})
    assert p.returncode == 0, p.stderr
    # On an installed collection.
    p = _sub([sys.executable, "-m", "ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.cli",
              "plan", "--kernel", kernel, "--method", "file", "--sysroot", sysroot, "--json"],
             env={"PYTHONPATH": os.path.join(REPO, ".build", "collections")})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["method"] == "file"
    p = _sub([sys.executable, os.path.join(REPO, "bin", "fleetboot-kexec"), "plan", "--sysroot", sysroot])
    assert p.returncode == 2 and "--kernel" in p.stderr


# -- a real Debian kernel end to end --------------------------------------------------------------

@pytest.mark.parametrize("sysroot", ["seabios-pc-1g", "ovmf-q35-2g", "seabios-q35-2g-crash"])
def test_real_kernel_plan_json_and_dry_run(debian_kernels, sysroot, tmp_path, fixed_entropy):
    pkg = debian_kernels["6.1.0-56-amd64"]
    initrd = tmp_path / "initrd"
    initrd.write_bytes(newc_initrd(4 << 20))
    root = os.path.join(SYSROOTS, sysroot)
    base = ["--kernel", pkg.vmlinuz, "--initrd", str(initrd), "--reuse-cmdline", "--method", "classic",
            "--sysroot", root, "--json"]
    rc, out, err = run(["plan"] + base)
    assert rc == 0, err
    plan = json.loads(out)
    assert [s["what"] for s in plan["segments"]] == ["boot_params", "kernel", "initrd", "purgatory"]
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--dry-run"] + base, syscalls=fake)
    assert rc == 0, err
    assert fake.calls == []
    assert json.loads(out)["segments"] == plan["segments"]
    # Replaying the reported segments through the planner's own checks passes.
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
    host = Host.read(root)
    replay = Plan(host.memory_map, arch="x86_64", totalram_pages=host.totalram_pages)
    for s in plan["segments"]:
        replay.add_segment_at(s["what"], bytes(s["bufsz"]), s["mem"], s["memsz"])
    replay.check()


def test_real_kernel_crash_plan_json_stays_in_region(debian_kernels):
    pkg = debian_kernels["6.1.0-56-amd64"]
    root = os.path.join(SYSROOTS, "seabios-q35-2g-crash")
    rc, out, err = run(["plan", "--crash", "--kernel", pkg.vmlinuz, "--reuse-cmdline", "--sysroot", root, "--json"])
    assert rc == 0, err
    plan = json.loads(out)
    start, end = 0x6D000000, 0x7D000000
    assert plan["kind"] == "crash" and "crashkernel=" not in plan["cmdline"]
    assert plan["flags"] == sc.KEXEC_ARCH_X86_64 | sc.KEXEC_ON_CRASH
    assert start <= plan["entry"] < end
    for s in plan["segments"]:
        assert start <= s["mem"] and s["mem"] + s["memsz"] <= end, s


def test_real_kernel_crash_on_host_without_region_fails_cleanly(debian_kernels):
    pkg = debian_kernels["6.1.0-56-amd64"]
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--crash", "--kernel", pkg.vmlinuz, "--sysroot", os.path.join(SYSROOTS, "ovmf-q35-2g")],
                       syscalls=fake)
    assert rc == 1 and "crashkernel=" in err and fake.calls == []


def test_not_a_kernel_is_refused_before_any_call(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"root:x:0:0::/root:/bin/sh\n" * 100)
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--kernel", str(junk), "--method", "classic", "--sysroot",
                        os.path.join(SYSROOTS, "seabios-pc-1g")], syscalls=fake)
    assert rc == 1 and "unrecognised kernel image" in err and fake.calls == []


def test_save_segments_writes_each_segment_as_planned(debian_kernels, files, tmp_path, fixed_entropy):
    """plan and load --dry-run write one file per segment, named in the report, holding exactly the
    bytes the kernel would get (bufsz; the zero fill is not data) — and two runs of the same plan
    compare equal file by file."""
    kernel, initrd = debian_kernels["6.1.0-56-amd64"].vmlinuz, files[1]
    root = os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash")
    base = ["--kernel", kernel, "--initrd", initrd, "--method", "classic", "--sysroot", root, "--json"]
    rc, out, err = run(["plan"] + base + ["--save-segments", str(tmp_path / "a")])
    assert rc == 0, err
    plan = json.loads(out)
    names = sorted(os.listdir(str(tmp_path / "a")))
    assert names == sorted(os.path.basename(s["file"]) for s in plan["segments"])
    assert names[0].startswith("00-boot_params") and len(names) == len(plan["segments"])
    for seg in plan["segments"]:
        with open(seg["file"], "rb") as f:
            data = f.read()
        assert len(data) == seg["bufsz"] and hashlib.sha256(data).hexdigest() == seg["sha256"], seg["what"]
    with open(os.path.join(str(tmp_path / "a"), [n for n in names if "initrd" in n][0]), "rb") as f, \
            open(initrd, "rb") as g:
        assert f.read() == g.read()
    fake = sc.FakeSyscalls()
    rc, out, err = run(["load", "--dry-run"] + base + ["--save-segments", str(tmp_path / "b")], syscalls=fake)
    assert rc == 0 and fake.calls == [], err
    for name in names:
        with open(os.path.join(str(tmp_path / "a"), name), "rb") as f, open(os.path.join(str(tmp_path / "b"), name), "rb") as g:
            assert f.read() == g.read(), name
    rc, out, err = run(["load"] + base + ["--save-segments", str(tmp_path / "c")], syscalls=fake)
    assert rc == 1 and "load --dry-run" in err and fake.calls == []
