"""`make demo`: boot a lab fleet on the older kernel and show each host's kernel through Ansible.

Until the kexec_upgrade role exists this is what the demo can honestly show: a real fleet of
Debian VMs, reached by Ansible through the generated inventory, and taken down afterwards.
"""

import json
import os
import re
import subprocess
import sys
import time

from lab.fleet import Fleet
from lab.image import LabError

HOSTS = int(os.environ.get("DEMO_HOSTS", "3"))


def main():
    fleet = Fleet("demo")
    if fleet.exists():
        fleet.down()
    started = time.time()
    try:
        fleet.up(hosts=HOSTS, die_with_parent=True)
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "-i", fleet.inventory,
               "all", "-m", "ansible.builtin.setup", "-a", "filter=ansible_kernel"]
        print("$ " + " ".join(cmd[1:]))
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
        print(res.stdout.rstrip())
        if res.returncode != 0:
            raise LabError("ansible failed (exit %d)" % res.returncode)
        kernels = {}
        # Ad-hoc output: "HOST | SUCCESS => {" then the JSON result up to a closing "}" line.
        for name, body in re.findall(r"^(\S+) \| SUCCESS => (\{.*?^\})$", res.stdout, re.M | re.S):
            kernels[name] = json.loads(body)["ansible_facts"]["ansible_kernel"]
        print("\n%-8s %-20s %s" % ("host", "kernel", "qemu pid"))
        for vm in fleet.vms:
            print("%-8s %-20s %d" % (vm.name, kernels.get(vm.name, "?"), vm.pid))
        resets = fleet.firmware_resets()
        print("firmware resets: %d" % len(resets))
        if len(kernels) != len(fleet.vms) or resets:
            raise LabError("not every host answered (%s)" % ", ".join(sorted(kernels)))
    except LabError as e:
        sys.stderr.write("demo: error: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        fleet.down()
    print("demo: done in %.0f s, no VM left running" % (time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
