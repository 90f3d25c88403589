"""The arm64 boot protocol's rules and the kernel's segment rules, checked on a plan report with
code of its own (not the loader's): shared by the plans on synthetic and on recorded trees."""

import os
import re
import subprocess

GiB = 1 << 30
MiB = 1 << 20
PAGE = 4096


def usable_ram(sysroot):
    """System RAM minus the "reserved" ranges nested in it, read from the recorded iomem."""
    ram, reserved = [], []
    with open(os.path.join(sysroot, "proc", "iomem")) as f:
        for line in f:
            m = re.match(r"^( *)([0-9a-f]+)-([0-9a-f]+) : (.*)$", line.rstrip("\n"))
            start, end = int(m.group(2), 16), int(m.group(3), 16) + 1
            if not m.group(1) and m.group(4) == "System RAM":
                ram.append([start, end])
            elif len(m.group(1)) == 2 and m.group(4) == "reserved":
                reserved.append((start, end))
    out = []
    for start, end in ram:
        cuts = sorted(r for r in reserved if r[0] < end and r[1] > start)
        for r0, r1 in cuts:
            if r0 > start:
                out.append((start, r0))
            start = max(start, r1)
        if start < end:
            out.append((start, end))
    return out


def fdtget(blob, tmp_path, prop, kind="x"):
    path = tmp_path / "dtb.dtb"
    path.write_bytes(blob)
    res = subprocess.run(["fdtget", "-t", kind, str(path), "/chosen", prop], stdout=subprocess.PIPE,
                         universal_newlines=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def u64_cells(text):
    hi, lo = [int(w, 16) for w in text.split()]
    return hi << 32 | lo


def assert_arm64_rules(report, ram, window=None):
    segs = {s["what"]: s for s in report["segments"]}
    assert 0 < len(report["segments"]) <= 16
    for s in report["segments"]:
        assert s["mem"] % PAGE == 0 and s["memsz"] % PAGE == 0 and s["bufsz"] <= s["memsz"], s
        assert any(lo <= s["mem"] and s["mem"] + s["memsz"] <= hi for lo, hi in ram), s
        if window:
            assert window[0] <= s["mem"] and s["mem"] + s["memsz"] <= window[1] - 0x10000, s
    ordered = sorted(report["segments"], key=lambda s: s["mem"])
    for a, b in zip(ordered, ordered[1:]):
        assert a["mem"] + a["memsz"] <= b["mem"], (a, b)
    kernel, dtb = segs["kernel"], segs["dtb"]
    assert kernel["mem"] % (2 * MiB) == 0  # text_offset 0: the 2 MiB aligned base itself
    # The DTB: 8-byte aligned, at most 2 MiB, inside one 2 MiB block.
    assert dtb["mem"] % 8 == 0 and dtb["bufsz"] <= 2 * MiB
    assert dtb["mem"] // (2 * MiB) == (dtb["mem"] + dtb["bufsz"] - 1) // (2 * MiB)
    # The initrd in the 1 GiB aligned, 32 GiB window covering the kernel.
    if "initrd" in segs:
        lo = kernel["mem"] // GiB * GiB
        assert lo <= segs["initrd"]["mem"] and segs["initrd"]["mem"] + segs["initrd"]["memsz"] <= lo + 32 * GiB
    purgatory = segs["purgatory"]
    assert purgatory["mem"] <= report["entry"] < purgatory["mem"] + purgatory["memsz"]
    return segs
