"""The kdump role's files agree with each other, and the lab can count firmware resets."""

import glob
import os
import re
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, "roles", "kdump")
sys.path.insert(0, REPO)

from lab.vm import FIRMWARE_RESET_MARK, VM, firmware_reset_count  # noqa: E402


def _yaml(*parts):
    with open(os.path.join(ROLE, *parts)) as f:
        return yaml.safe_load(f)


def _role_text():
    text = []
    for path in glob.glob(os.path.join(ROLE, "tasks", "*.yml")) + glob.glob(os.path.join(ROLE, "templates", "*")):
        with open(path) as f:
            text.append(f.read())
    return "\n".join(text)


def test_every_variable_is_documented_with_its_default():
    defaults = _yaml("defaults", "main.yml")
    options = _yaml("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, spec in options.items():
        assert spec.get("description"), name
        assert spec.get("default") == defaults[name], name


def test_every_variable_the_role_reads_is_a_default():
    used = set(re.findall(r"(?<![.\w])kdump_[a-z_]+\b", _role_text()))
    used -= {"kdump_test_result", "kdump_result"}  # the facts the role sets
    assert used <= set(_yaml("defaults", "main.yml")), sorted(used - set(_yaml("defaults", "main.yml")))


def test_crashkernel_tables_are_sorted_and_start_at_one_gib():
    defaults = _yaml("defaults", "main.yml")
    assert defaults["kdump_crashkernel_table"] == []  # empty: the architecture's rows
    tables = defaults["kdump_crashkernel_tables"]
    for table in tables.values():
        assert [row["min_ram_mb"] for row in table] == sorted(row["min_ram_mb"] for row in table)
    assert tables["x86_64"][0] == {"min_ram_mb": 1024, "crashkernel": "256M"}
    # arm64 needs more than x86_64 for the same RAM, in every row.
    x86, arm = tables["x86_64"], tables["aarch64"]
    assert [r["min_ram_mb"] for r in x86] == [r["min_ram_mb"] for r in arm]
    assert all(int(a["crashkernel"][:-1]) > int(x["crashkernel"][:-1]) for x, a in zip(x86, arm))
    specs = _yaml("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert specs["kdump_crashkernel_tables"]["default"] == tables and specs["kdump_crashkernel_table"]["default"] == []


def test_ppc64le_has_its_own_larger_crashkernel_table():
    defaults = _yaml("defaults", "main.yml")
    general, ppc = defaults["kdump_crashkernel_tables"]["x86_64"], defaults["kdump_crashkernel_tables"]["ppc64le"]
    assert [row["min_ram_mb"] for row in ppc] == sorted(row["min_ram_mb"] for row in ppc)

    def size_for(table, ram_mb):
        rows = [r for r in table if r["min_ram_mb"] <= ram_mb]
        return int(rows[-1]["crashkernel"].rstrip("MG")) * (1024 if rows[-1]["crashkernel"].endswith("G") else 1)

    for ram_mb in (2048, 4096, 16384, 65536, 131072):
        assert size_for(ppc, ram_mb) > size_for(general, ram_mb)


def test_capture_options_and_kernel_default_to_the_architectures():
    defaults = _yaml("defaults", "main.yml")
    assert defaults["kdump_capture_options"] == "auto" and defaults["kdump_kernel"] == "auto"
    with open(os.path.join(ROLE, "templates", "fleetboot-kdump-load.service.j2")) as f:
        load = f.read()
    # auto lets the loader add its own defaults for the host's architecture.
    assert "'' if kdump_capture_options == 'auto' else ' --capture-options=${KDUMP_CAPTURE_OPTIONS}'" in load
    assert "--kernel {{ _kdump_kernel }}" in load


def test_units_run_where_they_belong():
    with open(os.path.join(ROLE, "templates", "fleetboot-kdump-load.service.j2")) as f:
        load = f.read()
    with open(os.path.join(ROLE, "templates", "fleetboot-kdump-capture.service.j2")) as f:
        capture = f.read()
    assert "ConditionPathExists=!/proc/vmcore" in load and "RemainAfterExit=yes" in load
    assert "--crash" in load and "/boot/vmlinuz-%v" not in load  # the kernel comes from kdump_kernel
    assert "ExecStop=" in load and "unload --crash" in load
    assert "ConditionPathExists=/proc/vmcore" in capture
    assert "SuccessAction=reboot" in capture and "FailureAction=reboot" in capture
    assert "save-vmcore" in capture and "TimeoutStartSec=" in capture


def test_firmware_resets_are_counted_on_the_serial_log(tmp_path):
    log = tmp_path / "serial.log"
    assert firmware_reset_count(str(log)) == 0  # no log yet
    log.write_bytes(b"kexec_core: Starting new kernel\n[ 1.0] Linux version 6.1\n")
    assert firmware_reset_count(str(log)) == 0
    log.write_bytes(b"Kernel panic - not syncing: sysrq triggered crash\n...capture kernel...\n"
                    b"[ 80.1] reboot: Restarting system\n[ 0.0] Linux version\n")
    assert firmware_reset_count(str(log)) == 1
    vm = VM("vm1", str(tmp_path), image=None, kernel="6.1.0-54-amd64", no_reboot=False)
    assert vm.firmware_reset_count() == 1


def test_firmware_reset_mark_split_across_reads_counts_once(tmp_path):
    log = tmp_path / "serial.log"
    head = b"x" * ((1 << 20) - 5)
    log.write_bytes(head + FIRMWARE_RESET_MARK + b"\n" + FIRMWARE_RESET_MARK + b"\n")
    assert firmware_reset_count(str(log)) == 2


def _render(name, **variables):
    import jinja2  # pylint: disable=import-outside-toplevel  # controller-side, comes with ansible-core
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")), trim_blocks=True,
                             undefined=jinja2.StrictUndefined)
    defaults = _yaml("defaults", "main.yml")
    defaults.update(_kdump_cli="/usr/sbin/fleetboot-kexec", _kdump_kernel="/boot/vmlinuz-%v", _kdump_initrd="/boot/initrd.img-%v",
                    _kdump_crashkernel="256M", _kdump_known_hosts="/etc/fleetboot/kdump-known-hosts",
                    inventory_hostname="vm1")
    defaults.update(variables)
    return env.get_template(name).render(**defaults)


def test_reload_after_hotplug_loads_the_same_way_without_unloading_first():
    unit = _render("fleetboot-kdump-load.service.j2")
    start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    reload_ = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert len(start) == 1 and reload_[0] == "ExecReload=/bin/sleep 3"
    assert reload_[1].split("=", 1)[1] == start[0].split("=", 1)[1]  # the very same load, which replaces the old one
    rules = _render("fleetboot-kdump.rules.j2")
    active = [line for line in rules.splitlines() if line and not line.startswith("#")]
    assert 'SUBSYSTEM=="cpu", ACTION=="add|remove|online|offline", GOTO="fleetboot_kdump_cpu"' in active
    assert 'SUBSYSTEM=="memory", ACTION=="add|remove|online|offline", GOTO="fleetboot_kdump_memory"' in active
    for kind in ("cpu", "memory"):
        # Where the kernel updates the header itself (crash_hotplug reads 1), nothing is reloaded.
        assert any('TEST=="/sys/devices/system/%s/crash_hotplug"' % kind in line and 'RESULT=="1"' in line
                   and 'GOTO="fleetboot_kdump_end"' in line for line in active), kind
    runs = [line for line in active if "RUN+=" in line]
    assert runs == ['RUN+="/bin/systemctl --no-block try-reload-or-restart fleetboot-kdump-load.service"']


def test_capture_unit_waits_for_the_network_only_for_a_dump_server():
    local = _render("fleetboot-kdump-capture.service.j2")
    assert "network-online.target" not in local and "$KDUMP_TARGET_ARGS" in local
    remote = _render("fleetboot-kdump-capture.service.j2", kdump_target="ssh")
    assert "Wants=network-online.target" in remote and "After=network-online.target" in remote
    conf = _render("kdump.conf.j2", kdump_target="ssh", kdump_ssh_server="10.0.2.2", kdump_ssh_port=2222)
    assert ('KDUMP_TARGET_ARGS="--target ssh --ssh root@10.0.2.2 --ssh-port 2222 --ssh-key /etc/fleetboot/kdump_id_ed25519 '
            '--ssh-known-hosts /etc/fleetboot/kdump-known-hosts --ssh-wait 60 --host-name vm1"') in conf
    assert 'KDUMP_TARGET_ARGS="--target local"' in _render("kdump.conf.j2")
    assert "KDUMP_COMPRESSION=auto" in conf
