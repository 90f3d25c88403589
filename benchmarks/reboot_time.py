"""Reboot time of one lab VM, phase by phase: our loader, kexec-tools and a cold reboot, alternating.

Paths, each run in every round (the order rotates from round to round):

- ``ours-classic`` / ``ours-file``: the collection's loader (`fleetboot-kexec load --method ...`),
- ``kexec-tools-classic`` / ``kexec-tools-file``: Debian's kexec-tools (`kexec -c -l` / `kexec -s -l`),
  unpacked into the VM for this benchmark only (the collection never needs or ships it),
- ``cold``: nothing loaded, `systemctl reboot` through the firmware (SeaBIOS).

Every path loads (or boots) the same kernel (6.1.0-56, which QEMU also boots) with the same
initrd and command line, and is triggered the same way (`systemctl --no-block kexec|reboot`).
The serial console is stamped on the host's clock as it is printed (lab/console.py), so each
reboot splits into:

- load: the load command's own wall time, inside the VM (not part of the reboot),
- shutdown: trigger -> "kexec_core: Starting new kernel" (cold: "reboot: Restarting system"),
- jump: -> the new kernel's first line ("Linux version"): purgatory and the jump, or the firmware,
- boot: -> SSH answering with a new boot_id,
- total: trigger -> SSH answering,

and the new kernel's own log says when its RNG was ready (`random: crng init done`).

``--post-delay SECONDS`` (default 60) adds a second, SIMULATED part: a VM whose firmware waits
that long before booting (SeaBIOS's boot menu; real servers spend 1-5 minutes in POST) is
rebooted cold and by our classic path, alternating. A kexec never passes through the firmware.
``--post-delay 0`` skips it.

    .venv/bin/python benchmarks/reboot_time.py [--rounds 3] [--post-delay 60] [--json]
"""

import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.kexec_tools import kexec_tools_tree, library_dir  # noqa: E402
from lab.fleet import Fleet  # noqa: E402
from lab.reboot_timing import PATHS, PHASES, RebootTimer  # noqa: E402

KERNEL = "6.1.0-56-amd64"
SIMULATED = "SIMULATED POST"


def start(name, post_delay=0, kexec_tools=False):
    """A one-VM fleet booted on KERNEL that may reboot through its firmware, and its timer."""
    fleet = Fleet(name)
    if fleet.exists():
        fleet.down()
    fleet.up(hosts=1, no_reboot=False, kernel=KERNEL, post_delay=post_delay, die_with_parent=True,
             debian_initrd=True)
    timer = RebootTimer(fleet, fleet.vms[0], KERNEL)
    if kexec_tools:
        tree = kexec_tools_tree()
        timer.ship(tree, library_dir(tree))
    else:
        timer.ship()
    return fleet, timer


def run_rounds(timer, paths, rounds, log):
    runs = {p: [] for p in paths}
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for path in order:
            result = timer.reboot(path)
            runs[path].append(result)
            log("round %d %-20s total %5.1f s (load %s, shutdown %.1f, jump %.1f, boot %.1f; crng init at %s s)"
                % (r + 1, path, result["total"], "-" if result["load"] is None else "%.2f" % result["load"],
                   result["shutdown"], result["jump"], result["boot"], result["crng_init_s"]))
    return runs


def summarize(runs):
    out = {}
    for path, results in runs.items():
        entry = {"runs": results}
        for phase in PHASES:
            values = [r[phase] for r in results if r[phase] is not None]
            entry["median_" + phase + "_s"] = round(statistics.median(values), 2) if values else None
        crng = [r["crng_init_s"] for r in results if r["crng_init_s"] is not None]
        entry["crng_init_s"] = crng
        out[path] = entry
    return out


def ratio(summary, path, base):
    a, b = summary.get(path, {}).get("median_total_s"), summary.get(base, {}).get("median_total_s")
    return round(a / b, 3) if a and b else None


ROW = "  %-36s %6s %9s %6s %6s %7s  %s"


def print_table(title, summary, bases):
    print(title)
    print(ROW % ("path", "load", "shutdown", "jump", "boot", "total", "  ".join("/" + b for b in bases)))
    for path, entry in summary.items():
        cells = ["-" if entry["median_%s_s" % p] is None else "%.1f" % entry["median_%s_s" % p] for p in PHASES]
        ratios = ["%.2fx" % ratio(summary, path, b) if ratio(summary, path, b) else "-" for b in bases]
        print(ROW % tuple([path] + cells + ["  ".join(ratios)]) + "   crng init at %s s" % entry["crng_init_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--post-delay", type=float, default=60, metavar="SECONDS",
                    help="simulated firmware POST for the second part (0: skip it)")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    paths = tuple(p for p in args.paths.split(",") if p)
    unknown = set(paths) - set(PATHS)
    if unknown:
        ap.error("unknown paths: %s" % ", ".join(sorted(unknown)))

    def log(line):
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    report = {"kernel": KERNEL, "rounds": args.rounds, "medians_of": "seconds, host clock"}
    fleet, timer = start("bench-reboot", kexec_tools=any(p.startswith("kexec-tools") for p in paths))
    try:
        report["paths"] = summarize(run_rounds(timer, paths, args.rounds, log))
    finally:
        fleet.down()
    for p in paths:
        report["paths"][p]["total_vs_kexec_tools_classic"] = ratio(report["paths"], p, "kexec-tools-classic")
        report["paths"][p]["total_vs_cold"] = ratio(report["paths"], p, "cold")

    if args.post_delay:
        fleet, timer = start("bench-reboot-post", post_delay=args.post_delay)
        try:
            post = summarize(run_rounds(timer, ("ours-classic", "cold"), args.rounds, log))
        finally:
            fleet.down()
        post = {"%s (%s %gs)" % (p, SIMULATED, args.post_delay): v for p, v in post.items()}
        report["simulated_post"] = {"post_delay_s": args.post_delay, "note": "the firmware's wait is simulated "
                                    "(SeaBIOS boot menu); a kexec never passes through the firmware",
                                    "paths": post}
        names = list(post)
        report["simulated_post"]["kexec_vs_cold"] = ratio(post, names[0], names[1])

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_table("reboot of one lab VM (%s), medians of %d rounds, trigger -> SSH answering"
                % (KERNEL, args.rounds), report["paths"], [b for b in ("kexec-tools-classic", "cold") if b in paths])
    if args.post_delay:
        sim = report["simulated_post"]
        print_table("\nwith a %s of %g s (%s)" % (SIMULATED, args.post_delay, sim["note"]), sim["paths"], [names[1]])
        print("  kexec / cold with the %s: %.2fx" % (SIMULATED, sim["kexec_vs_cold"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
