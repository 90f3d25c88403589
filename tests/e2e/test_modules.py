"""fleetboot.kexec.kexec_facts and kexec_load run by real ansible / ansible-playbook against one lab
VM: the modules and the loader they carry are shipped by AnsiballZ (nothing copied by hand), and
a real kexec_load happens inside the VM. No jump: the VM keeps running 6.1.0-54 throughout."""

import json
import os
import subprocess
import textwrap

from .conftest import BIN, REPO

COLLECTIONS = os.path.join(REPO, ".build", "collections")
OLD_KERNEL = "6.1.0-54-amd64"
NEW_KERNEL = "6.1.0-56-amd64"
LOAD_NEW = {"kernel": "/boot/vmlinuz-" + NEW_KERNEL, "initrd": "/boot/initrd.img-" + NEW_KERNEL,
            "reuse_cmdline": True, "append": ["fleetboot.test=1"]}


def env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
                ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False")


def adhoc(fleet, module, args="", timeout=300):
    """`ansible lab -m module -a args`: (process, {host: result})."""
    cmd = [os.path.join(BIN, "ansible"), "-i", fleet.inventory, "lab", "-m", module]
    if args:
        cmd += ["-a", args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env(), check=False, cwd=REPO)
    results = {}
    decoder = json.JSONDecoder()
    for vm in fleet.vms:
        head = proc.stdout.find(vm.name + " | ")
        assert head >= 0, proc.stdout
        start = proc.stdout.index("{", head)
        results[vm.name] = decoder.raw_decode(proc.stdout[start:])[0]
    return proc, results


def kexec_load(fleet, tmp_path, task_args, check=False, timeout=600):
    """A playbook with one kexec_load task: (process, {host: registered result})."""
    out_dir = tmp_path / "results"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.iterdir():
        old.unlink()
    book = tmp_path / "load.yml"
    book.write_text(textwrap.dedent("""\
        - hosts: lab
          gather_facts: false
          tasks:
            - name: Load
              fleetboot.kexec.kexec_load: %s
              register: loaded
              ignore_errors: true
            - name: Save the result on the controller
              ansible.builtin.copy:
                content: "{{ loaded | to_json }}"
                dest: "%s/{{ inventory_hostname }}.json"
                mode: "0644"
              delegate_to: localhost
              check_mode: false
        """) % (json.dumps(task_args), out_dir))
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, str(book)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env(), check=False, cwd=REPO)
    results = {}
    for vm in fleet.vms:
        path = out_dir / ("%s.json" % vm.name)
        assert path.exists(), proc.stdout
        results[vm.name] = json.loads(path.read_text())
    return proc, results


def flag(fleet, name, rel="kexec_loaded"):
    rc, out, err = fleet.run(name, "cat /sys/kernel/" + rel)
    assert rc == 0, err
    return out.strip()


def test_facts_then_load_check_load_again_and_unload(fleet_factory, tmp_path):
    fleet = fleet_factory("m-modules", hosts=1)
    try:
        vm = fleet.vms[0]
        identity = (vm.pid, vm.start_time)
        # kexec-tools is not there, nor our loader: AnsiballZ has to ship it with the module.
        assert fleet.run(vm.name, "command -v kexec || echo absent")[1].split() == ["absent"]

        proc, results = adhoc(fleet, "fleetboot.kexec.kexec_facts")
        res = results[vm.name]
        print("kexec_facts:", json.dumps(res, sort_keys=True))
        assert proc.returncode == 0 and not res.get("failed"), proc.stdout
        facts = res["ansible_facts"]["kexec"]
        boot_id = fleet.run(vm.name, "cat /proc/sys/kernel/random/boot_id")[1].strip()
        assert facts["release"] == OLD_KERNEL and facts["arch"] == "x86_64"
        assert facts["boot_id"] == boot_id
        assert facts["loaded"] is False and facts["crash_loaded"] is False and facts["loaded_image"] is None
        assert facts["syscalls"] == {"kexec_load": True, "kexec_file_load": True}
        assert [k["release"] for k in facts["installed_kernels"]] == [NEW_KERNEL, OLD_KERNEL]
        assert facts["installed_kernels"][0] == {"release": NEW_KERNEL, "kernel": LOAD_NEW["kernel"],
                                                 "initrd": LOAD_NEW["initrd"]}
        cmdline = fleet.run(vm.name, "cat /proc/cmdline")[1].strip()
        assert facts["cmdline"] == cmdline

        # Check mode: the plan, and nothing loaded.
        proc, results = kexec_load(fleet, tmp_path, LOAD_NEW, check=True)
        res = results[vm.name]
        assert not res.get("failed") and res["changed"] is True, proc.stdout
        plan = res["plan"]
        print("kexec_load check mode plan:", json.dumps(plan, sort_keys=True))
        assert plan["method"] == res["method"] == "classic"
        assert plan["entry"] == res["entry"] > 0
        assert {s["what"] for s in plan["segments"]} >= {"kernel", "initrd", "purgatory"}
        assert res["cmdline"].split()[-1] == "fleetboot.test=1"
        assert flag(fleet, vm.name) == "0"
        assert fleet.run(vm.name, "test -e /run/fleetboot-kexec/normal.json")[0] != 0

        # A wrong checksum fails with both digests and loads nothing.
        proc, results = kexec_load(fleet, tmp_path, dict(LOAD_NEW, kernel_checksum="sha256:" + "0" * 64))
        res = results[vm.name]
        assert res.get("failed") is True and "sha256:" + "0" * 64 in res["msg"], proc.stdout
        sha = fleet.run(vm.name, "sha256sum " + LOAD_NEW["kernel"])[1].split()[0]
        assert "sha256:" + sha in res["msg"], res["msg"]
        assert flag(fleet, vm.name) == "0"

        # For real, with the right checksum.
        proc, results = kexec_load(fleet, tmp_path, dict(LOAD_NEW, kernel_checksum="sha256:" + sha))
        res = results[vm.name]
        print("kexec_load:", json.dumps(res, sort_keys=True))
        assert not res.get("failed") and res["changed"] is True, proc.stdout
        assert res["method"] == "classic" and res["kernel_sha256"] == sha and "plan" not in res
        assert flag(fleet, vm.name) == "1"
        record = json.loads(fleet.run(vm.name, "cat /run/fleetboot-kexec/normal.json")[1])
        assert record["boot_id"] == boot_id and record["kernel_sha256"] == sha
        assert record["cmdline"] == res["cmdline"]

        # Again: already loaded, nothing to do.
        proc, results = kexec_load(fleet, tmp_path, LOAD_NEW)
        res = results[vm.name]
        assert not res.get("failed") and res["changed"] is False, proc.stdout
        assert flag(fleet, vm.name) == "1"

        proc, results = adhoc(fleet, "fleetboot.kexec.kexec_facts")
        facts = results[vm.name]["ansible_facts"]["kexec"]
        assert facts["loaded"] is True and facts["loaded_image"]["kernel_sha256"] == sha

        # Unload (check mode first: nothing happens), then again: nothing left to unload.
        proc, results = kexec_load(fleet, tmp_path, {"state": "unloaded"}, check=True)
        assert results[vm.name]["changed"] is True and flag(fleet, vm.name) == "1", proc.stdout
        proc, results = kexec_load(fleet, tmp_path, {"state": "unloaded"})
        res = results[vm.name]
        assert not res.get("failed") and res["changed"] is True and res["method"] == "classic", proc.stdout
        assert flag(fleet, vm.name) == "0"
        assert fleet.run(vm.name, "test -e /run/fleetboot-kexec/normal.json")[0] != 0
        proc, results = kexec_load(fleet, tmp_path, {"state": "unloaded"})
        assert results[vm.name]["changed"] is False, proc.stdout

        # Same boot, same QEMU process: nothing jumped.
        assert fleet.run(vm.name, "cat /proc/sys/kernel/random/boot_id")[1].strip() == boot_id
        assert fleet.run(vm.name, "uname -r")[1].strip() == OLD_KERNEL
        assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    finally:
        fleet.down()
