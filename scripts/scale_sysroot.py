"""Make a recorded x86 host tree look like a host with more RAM: scale_sysroot.py SRC DST --ram-gib N

No lab VM can have a TiB of RAM, but sizing rules must be tested on such hosts.  This copies a
tree recorded from a lab VM (scripts/record_sysroot.sh) and grows what the loader reads about
memory, keeping everything else (kernel, crash region, CPUs, vmcoreinfo) as recorded:

- proc/iomem: the top-level System RAM below 4 GiB grows to 3 GiB (where QEMU's pc machine ends
  low memory on big guests), and RAM from 4 GiB up is added, around any Reserved range of the
  recording (the 1012-1024 GiB HyperTransport hole an AMD host's firmware reserves), with the
  64-bit PCI window moved above it, as firmware lays out such hosts;
- sys/firmware/memmap: the same RAM ranges, renumbered;
- sys/kernel/boot_params/data: the zero page's e820 table rewritten to match;
- proc/meminfo: MemTotal and MemFree grown by the RAM added.
"""

import argparse
import os
import re
import shutil
import struct

LOW_RAM_END = 0xC0000000
HIGH_RAM_START = 1 << 32
E820_ENTRIES, E820_TABLE, E820_MAX = 0x1E8, 0x2D0, 128
E820_TYPES = {"System RAM": 1, "Reserved": 2, "ACPI Tables": 3, "ACPI Non-volatile Storage": 4}
LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) : (.*)$")


def high_ram(total_high, reserved):
    """[(start, end)] inclusive ranges of ``total_high`` bytes from 4 GiB up, around ``reserved``."""
    out, pos, left = [], HIGH_RAM_START, total_high
    for start, end in sorted(r for r in reserved if r[1] >= HIGH_RAM_START):
        if left and start > pos:
            take = min(left, start - pos)
            out.append((pos, pos + take - 1))
            left -= take
        pos = max(pos, end + 1)
    if left:
        out.append((pos, pos + left - 1))
    return out


def scale_iomem(text, ram):
    lines = text.splitlines()
    top = [(int(m.group(1), 16), int(m.group(2), 16), m.group(3)) for m in map(LINE.match, lines) if m]
    reserved = [(s, e) for s, e, name in top if name == "Reserved" and s >= HIGH_RAM_START]
    low = [(s, e) for s, e, name in top if name == "System RAM"]
    low_total = sum(e - s + 1 for s, e in low)
    last_low = max(low, key=lambda r: r[1])
    grown_low = LOW_RAM_END - 0x20000 - last_low[0]  # QEMU leaves the top 128 KiB below 3 GiB reserved
    extra = (ram - (low_total - (last_low[1] - last_low[0] + 1) + grown_low)) >> 20 << 20  # whole MiB
    high = high_ram(extra, reserved)
    ram_end = high[-1][1] + 1
    out = []
    for line in lines:
        m = LINE.match(line)
        if m and int(m.group(1), 16) == last_low[0] and m.group(3) == "System RAM":
            out.append("%08x-%08x : System RAM" % (last_low[0], last_low[0] + grown_low - 1))
            continue
        if m and m.group(3) == "Reserved" and int(m.group(1), 16) == last_low[1] + 1:
            out.append("%08x-%08x : Reserved" % (last_low[0] + grown_low, LOW_RAM_END - 1))
            continue
        if m and m.group(3).startswith("PCI Bus") and last_low[1] < int(m.group(1), 16) < LOW_RAM_END:
            out.append("%08x-%s : %s" % (LOW_RAM_END, m.group(2), m.group(3)))  # the 32-bit window shrinks
            continue
        if m and m.group(3).startswith("PCI Bus") and int(m.group(1), 16) >= HIGH_RAM_START:
            size = int(m.group(2), 16) - int(m.group(1), 16) + 1
            start = (ram_end + size - 1) // size * size
            out.append("%x-%x : %s" % (start, start + size - 1, m.group(3)))
            continue
        out.append(line)
    for s, e in high:
        out.append("%x-%x : System RAM" % (s, e))
    ordered = _sort_top_level(out)
    return "\n".join(ordered) + "\n", last_low, (last_low[0], last_low[0] + grown_low - 1), high


def _sort_top_level(lines):
    """Keep nested lines under their parent, order parents by start address."""
    blocks = []
    for line in lines:
        if line.startswith(" ") and blocks:
            blocks[-1][1].append(line)
        else:
            blocks.append((line, []))
    blocks.sort(key=lambda b: int(b[0].split("-", 1)[0], 16))
    return [x for head, kids in blocks for x in [head] + kids]


def rewrite_memmap(root, last_low, grown, high):
    """The firmware map as recorded, with the same growth as iomem: the last low RAM entry and the
    reserved range after it moved up to 3 GiB, and the RAM above 4 GiB added."""
    memmap = os.path.join(root, "sys/firmware/memmap")
    entries = []
    for name in os.listdir(memmap):
        fields = {}
        for field in ("start", "end", "type"):
            with open(os.path.join(memmap, name, field)) as f:
                fields[field] = f.read().strip()
        start, end, kind = int(fields["start"], 16), int(fields["end"], 16), fields["type"]
        if kind == "System RAM" and start == last_low[0]:
            start, end = grown
        elif kind == "Reserved" and start == last_low[1] + 1:
            start, end = grown[1] + 1, LOW_RAM_END - 1
        entries.append((start, end, kind))
    entries += [(s, e, "System RAM") for s, e in high]
    entries.sort()
    shutil.rmtree(memmap)
    for i, (start, end, kind) in enumerate(entries):
        d = os.path.join(memmap, str(i))
        os.makedirs(d)
        for field, value in (("start", "%#x\n" % start), ("end", "%#x\n" % end), ("type", kind + "\n")):
            with open(os.path.join(d, field), "w") as f:
                f.write(value)
    return entries


def rewrite_e820(root, entries):
    path = os.path.join(root, "sys/kernel/boot_params/data")
    with open(path, "rb") as f:
        zero = bytearray(f.read())
    table = [(s, e - s + 1, E820_TYPES.get(k, 2)) for s, e, k in entries][:E820_MAX]
    zero[E820_ENTRIES] = len(table)
    for i, (addr, size, kind) in enumerate(table):
        struct.pack_into("<QQI", zero, E820_TABLE + 20 * i, addr, size, kind)
    with open(path, "wb") as f:
        f.write(zero)


def grow_meminfo(root, added):
    path = os.path.join(root, "proc/meminfo")
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        key = line.split(":", 1)[0]
        if key in ("MemTotal", "MemFree", "MemAvailable"):
            kb = int(line.split()[1]) + added // 1024
            line = "%-16s%8d kB" % (key + ":", kb)
        out.append(line)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--ram-gib", type=int, required=True)
    args = ap.parse_args(argv)
    shutil.copytree(args.src, args.dst)
    with open(os.path.join(args.src, "proc/iomem")) as f:
        before = f.read()
    before_ram = sum(int(m.group(2), 16) - int(m.group(1), 16) + 1
                     for m in map(LINE.match, before.splitlines()) if m and m.group(3) == "System RAM")
    text, last_low, grown, high = scale_iomem(before, args.ram_gib << 30)
    with open(os.path.join(args.dst, "proc/iomem"), "w") as f:
        f.write(text)
    entries = rewrite_memmap(args.dst, last_low, grown, high)
    rewrite_e820(args.dst, entries)
    added = (grown[1] - grown[0]) - (last_low[1] - last_low[0]) + sum(e - s + 1 for s, e in high)
    grow_meminfo(args.dst, added)
    print("%s: %.1f GiB of RAM (was %.1f GiB)" % (args.dst, (before_ram + added) / float(1 << 30), before_ram / float(1 << 30)))


if __name__ == "__main__":
    main()
