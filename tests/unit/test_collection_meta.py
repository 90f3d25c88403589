"""meta/runtime.yml: the `kexec` action group that `module_defaults: group/fleetboot.kexec.kexec`
resolves through ansible-core's own loader."""

import glob
import json
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")

# Run in a child: ansible-core's collection finder is process-global.
RESOLVE = r"""
import json, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible.playbook.play import Play
from ansible.parsing.dataloader import DataLoader
play = Play.load({"hosts": "all", "gather_facts": False,
                  "module_defaults": {"group/fleetboot.kexec.kexec": {}, "group/fleetboot.kexec.wait": {"connect_timeout": 7}},
                  "tasks": []}, loader=DataLoader())
print(json.dumps({"groups": play._action_groups, "defaults": play.module_defaults}))
"""


def modules():
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))
                  if not os.path.basename(p).startswith("_"))


def runtime():
    with open(os.path.join(REPO, "meta", "runtime.yml")) as f:
        return yaml.safe_load(f)


def test_every_module_is_in_the_kexec_action_group():
    assert sorted(runtime()["action_groups"]["kexec"]) == modules()


def test_the_wait_group_holds_the_actions_that_share_connect_timeout():
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.fleetboot.kexec.plugins.action import kdump_crash, kexec_reboot
    group = sorted(runtime()["action_groups"]["wait"])
    assert group == ["kdump_crash", "kexec_reboot"]
    for plugin in (kdump_crash, kexec_reboot):
        assert "connect_timeout" in plugin.ActionModule._VALID_ARGS


def test_module_defaults_group_resolves_to_every_module():
    proc = subprocess.run([sys.executable, "-c", RESOLVE, COLLECTIONS], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out["groups"]) == ["fleetboot.kexec.%s" % m for m in modules()]
    for name, groups in out["groups"].items():
        wanted = ["fleetboot.kexec.kexec"]
        if name in ("fleetboot.kexec.kdump_crash", "fleetboot.kexec.kexec_reboot"):
            wanted.append("fleetboot.kexec.wait")
        assert sorted(groups) == wanted, name
    assert out["defaults"] == [{"group/fleetboot.kexec.kexec": {}, "group/fleetboot.kexec.wait": {"connect_timeout": 7}}]
