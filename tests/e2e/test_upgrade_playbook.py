"""kexec-upgrade.yml against a mixed lab fleet, one inventory: vm1 x86_64, vm2 arm64, vm3 ppc64le
(each on Debian's 6.1.0-54 kernel of its architecture, upgraded to 6.1.0-56 by kexec; arm64 and
ppc64le through kexec_load and our purgatory, the only way on Debian's kernels there). Check mode,
a load failure that stops the roll, the real roll in two batches (data written before the jump
survives it), and a second run.

One fleet serves the whole file, in this order, to save boots (a boot and a jump each take about
35 s under TCG): check mode and the failed load leave every VM on its old kernel without a
reboot, so the real roll still starts from there. Each architecture's target release comes from
its inventory group (lab_x86_64, lab_arm64, lab_ppc64le), as a mixed fleet sets it.
"""

import hashlib
import json
import os
import re
import subprocess
import textwrap

import pytest

from lab import arches

from .conftest import BIN, REPO

COLLECTIONS = os.path.join(REPO, ".build", "collections")
ARCHES = ("x86_64", "arm64", "ppc64le")
# Per VM (vm1, vm2, vm3 in ARCHES order): the boot kernel and the one the roll moves it to.
OLD = {"vm%d" % (i + 1): arches.get(a).kernels[0] for i, a in enumerate(ARCHES)}
NEW = {"vm%d" % (i + 1): arches.get(a).kernels[1] for i, a in enumerate(ARCHES)}
PLAYBOOK = os.path.join(REPO, "kexec-upgrade.yml")
ROLL_PLAY = "PLAY [Roll hosts onto a new kernel by kexec]"
# Written by the pre-jump hook: one file fsync'ed by a task, one left in the page cache by a service.
FSYNCED = "/root/fleetboot-fsynced.txt"
UNSYNCED = "/root/fleetboot-unsynced.txt"
UNSYNCED_LINES = 200000


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    fleet = fleet_factory("u-roll", hosts=1, arch=",".join(ARCHES))
    yield fleet
    fleet.down()


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """An inventory that gives each architecture's group its target release."""
    path = tmp_path_factory.mktemp("releases") / "releases.yml"
    path.write_text("".join("%s:\n  vars:\n    kexec_upgrade_release: %s\n" % (arches.get(a).group, arches.get(a).kernels[1])
                            for a in ARCHES))
    return path


def run(fleet, tmp_path, releases, *extra, inventories=(), check=False, timeout=1800):
    """ansible-playbook kexec-upgrade.yml over the fleet: (exit status, output, {host: summary row})."""
    summary = tmp_path / "summary.json"
    if summary.exists():
        summary.unlink()
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, "-i", str(releases)]
    for inv in inventories:
        cmd += ["-i", str(inv)]
    cmd += [PLAYBOOK, "-e", "kexec_upgrade_summary_file=%s" % summary]
    cmd += list(extra)
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_RETRY_FILES_ENABLED="False")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env, check=False, cwd=REPO)
    assert summary.exists(), proc.stdout
    rows = {r["host"]: r for r in json.loads(summary.read_text())}
    return proc.returncode, proc.stdout, rows


def state(fleet):
    """{vm: (release, boot_id, kexec_loaded)} read over SSH."""
    out = {}
    for vm in fleet.vms:
        rc, stdout, stderr = fleet.run(vm.name, "uname -r; cat /proc/sys/kernel/random/boot_id "
                                                "/sys/kernel/kexec_loaded")
        assert rc == 0, stderr
        release, boot_id, loaded = stdout.split()
        out[vm.name] = (release, boot_id, loaded)
    return out


def recap(output):
    """{host: {ok: n, changed: n, failed: n, ...}} from the PLAY RECAP."""
    hosts = {}
    for name, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[name] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def identities(fleet):
    return {vm.name: (vm.pid, vm.start_time) for vm in fleet.vms}


def assert_same_qemu(fleet, before):
    assert identities(fleet) == before
    assert all(vm.running() for vm in fleet.vms), fleet.status()
    assert fleet.firmware_resets() == []


def test_check_mode_changes_nothing(fleet, tmp_path, releases):
    before, qemu = state(fleet), identities(fleet)
    assert {name: s[0] for name, s in before.items()} == OLD
    assert [vm.arch.name for vm in fleet.vms] == list(ARCHES)
    rc, out, rows = run(fleet, tmp_path, releases, "-e", "kexec_upgrade_serial=3", check=True)
    assert rc == 0, out
    assert state(fleet) == before  # same release, same boot, nothing loaded (kexec_loaded 0)
    assert all(s[2] == "0" for s in before.values())
    for name, row in rows.items():
        assert row["status"] == "would upgrade" and row["new_release"] == NEW[name], (name, row)
    assert_same_qemu(fleet, qemu)


def test_unloadable_initrd_fails_the_host_and_stops_the_roll(fleet, tmp_path, releases):
    """vm1 gets a file of garbage as its initrd: the loader refuses it (it is no initramfs),
    vm1 keeps its kernel, vm2 of the same batch is held back and vm3 (the next batch) is never
    touched."""
    before, qemu = state(fleet), identities(fleet)
    rc, dummy, stderr = fleet.run("vm1", "(printf 'garbage'; head -c 3000000 /dev/urandom) > /root/garbage.img")
    assert rc == 0, stderr
    bad_inventory = tmp_path / "bad.yml"
    bad_inventory.write_text(textwrap.dedent("""\
        all:
          hosts:
            vm1:
              kexec_upgrade_initrd: /root/garbage.img
        """))
    rc, out, rows = run(fleet, tmp_path, releases, "-e", "kexec_upgrade_serial=2",
                        "-e", "kexec_upgrade_max_fail_percentage=0", inventories=[bad_inventory])
    assert rc == 2, out
    loader_msg = "initrd /root/garbage.img is not an initramfs"
    assert re.search(r"fatal: \[vm1\]: FAILED! => .*%s.*nothing was loaded" % re.escape(loader_msg), out), out
    assert rows["vm1"]["status"] == "failed" and loader_msg in rows["vm1"]["msg"], rows["vm1"]
    assert rows["vm2"]["status"] == "stopped", rows["vm2"]
    assert rows["vm3"]["status"] == "not run", rows["vm3"]
    assert out.count(ROLL_PLAY) == 1, out  # no second batch
    assert "[vm3]" not in out.split("PLAY [Summarize")[0], out
    counts = recap(out)
    assert counts["vm1"]["failed"] == 1 and counts["vm2"]["failed"] == 0, counts
    assert state(fleet) == before  # every host on its old kernel and boot, nothing left loaded
    assert_same_qemu(fleet, qemu)


def test_roll_in_two_batches_by_kexec_keeps_written_data(fleet, tmp_path, releases):
    before, qemu = state(fleet), identities(fleet)
    assert {name: s[0] for name, s in before.items()} == OLD
    content = "fsynced before the jump %s\n" % tmp_path.name
    unsynced = "".join("%d\n" % i for i in range(1, UNSYNCED_LINES + 1))
    hooks = tmp_path / "before_jump.yml"
    hooks.write_text(textwrap.dedent("""\
        - name: Write a file and fsync it just before the jump
          ansible.builtin.command:
            argv: [python3, -c, "import os, sys; f = open(sys.argv[1], 'w'); f.write(sys.argv[2]); f.flush(); os.fsync(f.fileno())", "%s", "%s"]
          changed_when: true
        - name: Let a service write a file without fsync
          ansible.builtin.command:
            argv: [systemd-run, --wait, --quiet, --unit, fleetboot-e2e-write, --service-type=oneshot,
                   /bin/sh, -c, "seq 1 %d > %s"]
          changed_when: true
        """) % (FSYNCED, content.replace("\n", "\\n"), UNSYNCED_LINES, UNSYNCED))
    rc, out, rows = run(fleet, tmp_path, releases, "-e", "kexec_upgrade_serial=2", "-e", "kexec_upgrade_pre_tasks=%s" % hooks)
    assert rc == 0, out

    # Two batches: vm1 and vm2 jump in the first play run, vm3 in the second.
    batches = out.split(ROLL_PLAY)[1:]
    assert len(batches) == 2, out
    jumped = [re.findall(r"^changed: \[(vm\d)\]", b.split("TASK [fleetboot.kexec.kexec_upgrade : Jump")[1]
                         .split("TASK [")[0], re.M) for b in batches]
    assert sorted(jumped[0]) == ["vm1", "vm2"] and jumped[1] == ["vm3"], jumped

    after = state(fleet)
    for vm in fleet.vms:
        release, boot_id = after[vm.name][:2]
        assert release == NEW[vm.name], (vm.name, after)
        assert boot_id != before[vm.name][1], vm.name
        row = rows[vm.name]
        assert row["status"] == "upgraded" and row["method"] == "kexec", row
        assert row["old_release"] == OLD[vm.name] and row["new_release"] == NEW[vm.name], row
        assert row["old_boot_id"] == before[vm.name][1] and row["new_boot_id"] == boot_id, row
        assert row["downtime"] > 0, row
        rc, stdout, stderr = fleet.run(vm.name, "cat %s; sha256sum %s" % (FSYNCED, UNSYNCED))
        assert rc == 0, stderr
        assert stdout.startswith(content), stdout
        assert hashlib.sha256(unsynced.encode()).hexdigest() in stdout, stdout
    assert_same_qemu(fleet, qemu)
    for vm in fleet.vms:
        assert "host             status" in out and re.search(
            r"%s\s+upgraded\s+%s -> %s\s+[\d.]+ s\s+kexec" % (vm.name, OLD[vm.name], NEW[vm.name]), out), out


def test_second_run_changes_nothing(fleet, tmp_path, releases):
    before, qemu = state(fleet), identities(fleet)
    assert {name: s[0] for name, s in before.items()} == NEW
    rc, out, rows = run(fleet, tmp_path, releases, "-e", "kexec_upgrade_serial=2")
    assert rc == 0, out
    counts = recap(out)
    assert sorted(counts) == ["vm1", "vm2", "vm3"], out
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    assert all(r["status"] == "current" and r["method"] is None for r in rows.values()), rows
    assert state(fleet) == before
    assert_same_qemu(fleet, qemu)
