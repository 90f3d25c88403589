# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build each architecture's purgatory and emit plugins/module_utils/kexec/arch/<arch>/purgatory_blob.py.

Controller-side tool (needs gcc or the arch's cross gcc, its ld, and pyelftools).  Hosts never
compile anything: they get the relocatable object as a generated Python module and link it with
plugins/module_utils/kexec/purgatory/linker.py.  Sources shared by every architecture live in
common/ (the region table, the sha256 check, the crash-time backup copy); <arch>/ holds the entry
code, the console and the halt.

    python purgatory/build.py [ARCH ...]           rebuild and rewrite the generated modules
    python purgatory/build.py --check [ARCH ...]   rebuild and exit 1 if a checked-in module is stale

gcc output differs between gcc versions, so --check compares objects only when the local gcc is
the one that produced the checked-in module; with another gcc it still fails when the sources
changed (that needs no compiler to know), and otherwise skips with a message.
"""

from __future__ import absolute_import, division, print_function

import argparse
import ast
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COMMON = os.path.join(HERE, "common")
ARCH_DIR = os.path.join(REPO, "plugins", "module_utils", "kexec", "arch")

COMMON_SOURCES = ["purgatory.c", "sha256.c"]
COMMON_HEADERS = ["arch.h", "sha256.h", "types.h"]

# Flags every purgatory needs: freestanding, no libc, no unwind tables, no calls gcc would
# invent (memset/memcpy for byte loops), no COMMON symbols, reproducible file names.
BASE_CFLAGS = [
    "-Os", "-g0", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
    "-ffreestanding", "-nostdinc", "-nostdlib", "-fno-builtin",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fno-zero-initialized-in-bss", "-fno-common", "-fno-jump-tables",
    "-fno-tree-loop-distribute-patterns",
    "-fno-delete-null-pointer-checks",
    "-ffile-prefix-map=%s/=" % HERE,
]

# Symbols every purgatory defines for the loader, with the exact size it writes (None: a label).
COMMON_SYMBOLS = {
    # struct region { u64 start; u64 len; u8 sha256[32]; } x 16, one digest per segment.
    "fleetboot_sha256_regions": 16 * 48,
    # Crash loads: the low-memory backup copy (all zero: nothing to copy).
    "fleetboot_backup_src": 8,
    "fleetboot_backup_dst": 8,
    "fleetboot_backup_len": 8,
}


class Target:
    """One architecture's purgatory build: compiler, flags, the relocation types its linker
    applies (anything else in the object is a build error) and the symbols the loader sets."""

    def __init__(self, name, cc, ld, cflags, e_machine, relocations, symbols, sources, headers=(), linker_symbols=()):
        self.name = name
        self.cc = cc
        self.ld = ld
        self.cflags = BASE_CFLAGS + list(cflags)
        self.e_machine = e_machine
        self.relocations = dict(relocations)
        self.symbols = dict(COMMON_SYMBOLS, **symbols)
        # The arch's sources first: its entry code then starts .text, its data .data.
        self.sources = ["%s/%s" % (name, n) for n in sources] + ["common/" + n for n in COMMON_SOURCES]
        self.headers = ["common/" + n for n in COMMON_HEADERS] + ["%s/%s" % (name, n) for n in headers]
        # Undefined symbols the loader's linker defines itself (Relocator.linker_symbol).
        self.linker_symbols = frozenset(linker_symbols)

    @property
    def output(self):
        return os.path.join(ARCH_DIR, self.name, "purgatory_blob.py")


TARGETS = {
    "x86_64": Target(
        "x86_64", cc="gcc", ld="ld",
        cflags=["-fno-PIC", "-fno-PIE", "-mcmodel=large", "-mno-red-zone",
                "-fcf-protection=none", "-mgeneral-regs-only"],
        e_machine="EM_X86_64",
        relocations={1: "R_X86_64_64", 2: "R_X86_64_PC32", 4: "R_X86_64_PLT32",
                     10: "R_X86_64_32", 11: "R_X86_64_32S"},
        symbols={"purgatory_start": None, "fleetboot_kernel_entry": 8, "fleetboot_boot_params": 8},
        sources=["entry.S", "console.c"]),
    # MMU off in purgatory: every access is to Device memory, so nothing may be unaligned
    # (-mstrict-align) and no atomics helpers may be called (-mno-outline-atomics).
    "arm64": Target(
        "arm64", cc="aarch64-linux-gnu-gcc", ld="aarch64-linux-gnu-ld",
        cflags=["-fno-PIC", "-fno-PIE", "-mcmodel=small", "-mgeneral-regs-only", "-mstrict-align",
                "-mno-outline-atomics", "-mbranch-protection=none"],
        e_machine="EM_AARCH64",
        relocations={257: "R_AARCH64_ABS64", 261: "R_AARCH64_PREL32", 274: "R_AARCH64_ADR_PREL_LO21",
                     275: "R_AARCH64_ADR_PREL_PG_HI21", 277: "R_AARCH64_ADD_ABS_LO12_NC",
                     278: "R_AARCH64_LDST8_ABS_LO12_NC", 280: "R_AARCH64_CONDBR19", 282: "R_AARCH64_JUMP26",
                     283: "R_AARCH64_CALL26", 284: "R_AARCH64_LDST16_ABS_LO12_NC",
                     285: "R_AARCH64_LDST32_ABS_LO12_NC", 286: "R_AARCH64_LDST64_ABS_LO12_NC",
                     299: "R_AARCH64_LDST128_ABS_LO12_NC"},
        symbols={"purgatory_start": None, "fleetboot_kernel_entry": 8, "fleetboot_dtb": 8,
                 "fleetboot_console_kind": 8, "fleetboot_console_base": 8, "fleetboot_console_shift": 8,
                 "fleetboot_console_width": 8},
        sources=["entry.S", "console.c"]),
    # ELFv2, medium code model: data TOC-relative, calls to local entry points; no floating
    # point or vector registers (the MSR may have them off in kexec's real mode); -O2, because
    # -Os calls out-of-line register save/restore helpers a freestanding object does not have.
    "ppc64le": Target(
        "ppc64le", cc="powerpc64le-linux-gnu-gcc", ld="powerpc64le-linux-gnu-ld",
        cflags=["-O2", "-mlittle-endian", "-mabi=elfv2", "-mcmodel=medium", "-mno-pcrel", "-fno-PIC",
                "-msoft-float", "-mno-altivec", "-mno-vsx"],
        e_machine="EM_PPC64",
        relocations={10: "R_PPC64_REL24", 50: "R_PPC64_TOC16_HA", 48: "R_PPC64_TOC16_LO",
                     64: "R_PPC64_TOC16_LO_DS", 250: "R_PPC64_REL16_LO", 252: "R_PPC64_REL16_HA"},
        symbols={"purgatory_start": None, "fleetboot_kernel_head": 0xFC, "fleetboot_kernel": 8,
                 "fleetboot_kernel_entry": 8, "fleetboot_device_tree": 8, "fleetboot_run_at_load": 8,
                 "fleetboot_vterm": 8},
        sources=["entry.S", "ppc64.c"],
        linker_symbols=(".TOC.",)),
}

# Symbols an older loader wrote that must be gone: a loader built for one layout must never
# link an object built for another.
RETIRED_SYMBOLS = ("fleetboot_sha256_digest",)


def gcc_version(cc):
    """The first line of `cc --version`, recorded in the generated module."""
    out = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip()


def sources_digest(target):
    """sha256 over the target's sources (names and contents), independent of the compiler."""
    h = hashlib.sha256()
    for name in sorted(target.sources + target.headers):
        with open(os.path.join(HERE, name), "rb") as f:
            data = f.read()
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def compile_object(target, cc, ld):
    """Compile every source and `ld -r` them into one relocatable object; return its bytes."""
    tmp = tempfile.mkdtemp(prefix="purgatory-")
    try:
        objects = []
        includes = ["-I", "common", "-I", target.name]
        for name in target.sources:
            obj = os.path.join(tmp, name.replace("/", "_").rsplit(".", 1)[0] + ".o")
            # Relative source names keep the build directory out of the object (reproducible).
            subprocess.run([cc] + target.cflags + includes + ["-c", name, "-o", obj], cwd=HERE, check=True)
            objects.append(obj)
        out = os.path.join(tmp, "purgatory.ro")
        subprocess.run([ld, "-r", "-o", out] + objects, check=True)
        # Kept exactly as ld wrote it, so readelf on a decoded copy shows what hosts link.
        with open(out, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_object(target, blob):
    """Refuse objects the loader could not link: wrong machine, unknown relocations, missing
    symbols, COMMON."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    from elftools.elf.sections import SymbolTableSection

    problems = []
    elf = ELFFile(io.BytesIO(blob))
    if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != target.e_machine:
        problems.append("not a little-endian %s ELF64 object" % target.e_machine)
    if elf["e_type"] != "ET_REL":
        problems.append("not a relocatable object (e_type %s)" % elf["e_type"])
    symtab = None
    for sec in elf.iter_sections():
        if isinstance(sec, SymbolTableSection):
            symtab = sec
        if sec["sh_type"] == "SHT_REL":
            problems.append("section %s uses REL relocations; only RELA is linked" % sec.name)
    if symtab is None:
        return problems + ["no symbol table"]
    symbols = list(symtab.iter_symbols())
    for sec in elf.iter_sections():
        if not isinstance(sec, RelocationSection):
            continue
        patched = elf.get_section(sec["sh_info"])
        if not patched["sh_flags"] & 0x2:
            continue  # relocations of non-allocated sections (debug info) are never applied
        for rel in sec.iter_relocations():
            rtype = rel["r_info_type"]
            if rtype not in target.relocations:
                problems.append("%s: unsupported relocation type %d at %#x"
                                % (sec.name, rtype, rel["r_offset"]))
            sym = symbols[rel["r_info_sym"]]
            if sym["st_shndx"] == "SHN_UNDEF" and rel["r_info_sym"] != 0 and sym.name not in target.linker_symbols:
                problems.append("%s: relocation against undefined symbol %s" % (sec.name, sym.name))
    by_name = {s.name: s for s in symbols if s.name}
    for name, size in sorted(target.symbols.items()):
        sym = by_name.get(name)
        if sym is None or sym["st_shndx"] in ("SHN_UNDEF", "SHN_COMMON"):
            problems.append("required symbol %s is missing or undefined" % name)
        elif sym["st_info"]["bind"] != "STB_GLOBAL":
            problems.append("required symbol %s is not global" % name)
        elif size is not None and sym["st_size"] != size:
            problems.append("required symbol %s has size %d, the loader writes %d"
                            % (name, sym["st_size"], size))
    for name in RETIRED_SYMBOLS:
        if name in by_name:
            problems.append("symbol %s belongs to the old single-digest layout; remove it" % name)
    for sym in symbols:
        if sym["st_shndx"] == "SHN_COMMON":
            problems.append("COMMON symbol %s (build with -fno-common)" % sym.name)
        elif sym["st_shndx"] == "SHN_UNDEF" and sym.name and sym.name not in target.linker_symbols:
            problems.append("undefined symbol %s (the purgatory has no libc)" % sym.name)
    return problems


def render_module(target, blob, version, src_digest):
    """The text of the generated module."""
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    body = "\n".join('    "%s"' % line for line in lines)
    return '''# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# GENERATED by purgatory/build.py from purgatory/common/ and purgatory/%(arch)s/ -- do not edit by hand.
# Rebuild with `python purgatory/build.py %(arch)s`; `python purgatory/build.py --check` verifies it.
"""The %(arch)s purgatory as a relocatable ELF object, linked on the host by purgatory/linker.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib

from ...errors import PurgatoryError

GCC_VERSION = %(version)r
SOURCES_SHA256 = %(src)r
OBJECT_SHA256 = %(sha)r
OBJECT_SIZE = %(size)d

_OBJECT_BASE64 = (
%(body)s
)


def object_bytes():
    """The purgatory object, checked against OBJECT_SHA256 so a damaged copy is never linked."""
    blob = base64.b64decode(_OBJECT_BASE64)
    if len(blob) != OBJECT_SIZE or hashlib.sha256(blob).hexdigest() != OBJECT_SHA256:
        raise PurgatoryError("the shipped purgatory object is damaged (sha256 mismatch); "
                             "reinstall the fleetboot.kexec collection")
    return blob
''' % {"arch": target.name, "version": version, "src": src_digest, "sha": hashlib.sha256(blob).hexdigest(),
       "size": len(blob), "body": body}


def read_checked_in(target):
    """(text, GCC_VERSION, SOURCES_SHA256) of the target's generated module, or Nones."""
    if not os.path.exists(target.output):
        return None, None, None
    with open(target.output) as f:
        text = f.read()
    values = {}
    for line in text.splitlines():
        for key in ("GCC_VERSION", "SOURCES_SHA256"):
            if line.startswith(key + " = "):
                values[key] = ast.literal_eval(line.split(" = ", 1)[1])
    return text, values.get("GCC_VERSION"), values.get("SOURCES_SHA256")


def build(target, check, cc=None, ld=None):
    """Build one target; returns the exit status (0 ok, 1 stale, 2 build error)."""
    cc = cc or target.cc
    ld = ld or target.ld
    out_path = os.path.relpath(target.output, REPO)
    if shutil.which(cc) is None:
        print("purgatory: %s: %s is not installed (make deps installs it)" % (target.name, cc), file=sys.stderr)
        return 2
    version = gcc_version(cc)
    src_digest = sources_digest(target)
    old_text = None
    if check:
        old_text, old_version, old_src = read_checked_in(target)
        if old_text is None:
            print("purgatory: %s is missing; run python purgatory/build.py %s" % (out_path, target.name))
            return 1
        if old_version != version:
            if old_src != src_digest:
                print("purgatory: STALE: the sources changed since %s was generated "
                      "(it was built with %r; rebuild with that or any gcc)" % (out_path, old_version))
                return 1
            print("purgatory: check skipped: %s was built with %r, this host has %r "
                  "(sources unchanged)" % (out_path, old_version, version))
            return 0

    blob = compile_object(target, cc, ld)
    problems = check_object(target, blob)
    if problems:
        for p in problems:
            print("purgatory: %s: ERROR: %s" % (target.name, p), file=sys.stderr)
        return 2
    text = render_module(target, blob, version, src_digest)
    if check:
        if text != old_text:
            print("purgatory: STALE: %s does not match a fresh build; run python purgatory/build.py %s"
                  % (out_path, target.name))
            return 1
        print("purgatory: %s is up to date (%d-byte object, %s)" % (out_path, len(blob), version))
        return 0
    with open(target.output, "w") as f:
        f.write(text)
    print("purgatory: wrote %s (%d-byte object, sha256 %s, %s)"
          % (out_path, len(blob), hashlib.sha256(blob).hexdigest(), version))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", nargs="*", help="architectures to build (default: all of %s)"
                        % ", ".join(sorted(TARGETS)))
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a generated module is stale, write nothing")
    parser.add_argument("--cc", help="compiler to use instead of the target's (one arch only)")
    parser.add_argument("--ld", help="linker to use instead of the target's (one arch only)")
    args = parser.parse_args(argv)
    names = args.arch or sorted(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error("unknown architecture %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(TARGETS))))
    if (args.cc or args.ld) and len(names) != 1:
        parser.error("--cc/--ld apply to one architecture; name it")
    status = 0
    for name in names:
        status = max(status, build(TARGETS[name], args.check, args.cc, args.ld))
    return status


if __name__ == "__main__":
    sys.exit(main())
