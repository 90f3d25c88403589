# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the x86_64 purgatory and emit plugins/module_utils/kexec/purgatory_x86_64.py.

Controller-side tool (needs gcc, ld and pyelftools).  Hosts never compile anything: they get the
relocatable object as a generated Python module and link it with purgatory.py.

    python purgatory/build.py           rebuild and rewrite the generated module
    python purgatory/build.py --check   rebuild and exit 1 if the checked-in module is stale

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
SRC = os.path.join(HERE, "x86_64")
OUTPUT = os.path.join(REPO, "plugins", "module_utils", "kexec", "purgatory_x86_64.py")

SOURCES = ["entry.S", "purgatory.c", "sha256.c"]
HEADERS = ["sha256.h", "types.h"]

CFLAGS = [
    "-Os", "-g0", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
    "-ffreestanding", "-nostdinc", "-nostdlib", "-fno-builtin",
    "-fno-PIC", "-fno-PIE", "-mcmodel=large", "-mno-red-zone",
    "-fno-stack-protector", "-fcf-protection=none", "-mgeneral-regs-only",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fno-zero-initialized-in-bss", "-fno-common", "-fno-jump-tables",
    # Keep gcc from turning our byte loops into memset/memcpy calls nobody provides.
    "-fno-tree-loop-distribute-patterns",
    "-fno-delete-null-pointer-checks",
    "-ffile-prefix-map=%s/=" % SRC,
]

# Relocation types purgatory.py applies.  Anything else in the object is a build error.
SUPPORTED_RELOCATIONS = {
    1: "R_X86_64_64",
    2: "R_X86_64_PC32",
    4: "R_X86_64_PLT32",
    10: "R_X86_64_32",
    11: "R_X86_64_32S",
}

# Symbols the loader sets or reads, with the exact size it writes (None: a code label).
REQUIRED_SYMBOLS = {
    "purgatory_start": None,
    "fleetboot_kernel_entry": 8,
    "fleetboot_boot_params": 8,
    # struct region { u64 start; u64 len; u8 sha256[32]; } x 16, one digest per segment.
    "fleetboot_sha256_regions": 16 * 48,
    # Crash loads: the low-memory backup copy (all zero: nothing to copy).
    "fleetboot_backup_src": 8,
    "fleetboot_backup_dst": 8,
    "fleetboot_backup_len": 8,
}

# Symbols an older loader wrote that must be gone: a loader built for one layout must never
# link an object built for another.
RETIRED_SYMBOLS = ("fleetboot_sha256_digest",)


def gcc_version(cc):
    """The first line of `cc --version`, recorded in the generated module."""
    out = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip()


def sources_digest():
    """sha256 over the purgatory sources (names and contents), independent of the compiler."""
    h = hashlib.sha256()
    for name in sorted(SOURCES + HEADERS):
        with open(os.path.join(SRC, name), "rb") as f:
            data = f.read()
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def compile_object(cc, ld):
    """Compile every source and `ld -r` them into one relocatable object; return its bytes."""
    tmp = tempfile.mkdtemp(prefix="purgatory-")
    try:
        objects = []
        for name in SOURCES:
            obj = os.path.join(tmp, os.path.splitext(name)[0] + ".o")
            # Relative source names keep the build directory out of the object (reproducible).
            subprocess.run([cc] + CFLAGS + ["-c", name, "-o", obj], cwd=SRC, check=True)
            objects.append(obj)
        out = os.path.join(tmp, "purgatory.ro")
        subprocess.run([ld, "-r", "-o", out] + objects, check=True)
        # Kept exactly as ld wrote it, so readelf on a decoded copy shows what hosts link.
        with open(out, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_object(blob):
    """Refuse objects purgatory.py could not link: unknown relocations, missing symbols, COMMON."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    from elftools.elf.sections import SymbolTableSection

    problems = []
    elf = ELFFile(io.BytesIO(blob))
    if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != "EM_X86_64":
        problems.append("not a little-endian x86_64 ELF64 object")
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
        target = elf.get_section(sec["sh_info"])
        if not target["sh_flags"] & 0x2:
            continue  # relocations of non-allocated sections (debug info) are never applied
        for rel in sec.iter_relocations():
            rtype = rel["r_info_type"]
            if rtype not in SUPPORTED_RELOCATIONS:
                problems.append("%s: unsupported relocation type %d at %#x"
                                % (sec.name, rtype, rel["r_offset"]))
            sym = symbols[rel["r_info_sym"]]
            if sym["st_shndx"] == "SHN_UNDEF" and rel["r_info_sym"] != 0:
                problems.append("%s: relocation against undefined symbol %s" % (sec.name, sym.name))
    by_name = {s.name: s for s in symbols if s.name}
    for name, size in sorted(REQUIRED_SYMBOLS.items()):
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
        elif sym["st_shndx"] == "SHN_UNDEF" and sym.name:
            problems.append("undefined symbol %s (the purgatory has no libc)" % sym.name)
    return problems


def render_module(blob, version, src_digest):
    """The text of the generated module."""
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    body = "\n".join('    "%s"' % line for line in lines)
    return '''# GENERATED by purgatory/build.py from purgatory/x86_64/ -- do not edit by hand.
# Rebuild with `python purgatory/build.py`; `python purgatory/build.py --check` verifies it.
"""The x86_64 purgatory as a relocatable ELF object, linked on the host by purgatory.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib

from .errors import PurgatoryError

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
''' % {"version": version, "src": src_digest, "sha": hashlib.sha256(blob).hexdigest(),
       "size": len(blob), "body": body}


def read_checked_in():
    """(text, GCC_VERSION, SOURCES_SHA256) of the current generated module, or Nones."""
    if not os.path.exists(OUTPUT):
        return None, None, None
    with open(OUTPUT) as f:
        text = f.read()
    values = {}
    for line in text.splitlines():
        for key in ("GCC_VERSION", "SOURCES_SHA256"):
            if line.startswith(key + " = "):
                values[key] = ast.literal_eval(line.split(" = ", 1)[1])
    return text, values.get("GCC_VERSION"), values.get("SOURCES_SHA256")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the generated module is stale, write nothing")
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    parser.add_argument("--ld", default=os.environ.get("LD", "ld"))
    args = parser.parse_args(argv)

    version = gcc_version(args.cc)
    src_digest = sources_digest()
    if args.check:
        old_text, old_version, old_src = read_checked_in()
        if old_text is None:
            print("purgatory: %s is missing; run python purgatory/build.py" % OUTPUT)
            return 1
        if old_version != version:
            if old_src != src_digest:
                print("purgatory: STALE: the sources changed since %s was generated "
                      "(it was built with %r; rebuild with that or any gcc)" % (OUTPUT, old_version))
                return 1
            print("purgatory: check skipped: the module was built with %r, this host has %r "
                  "(sources unchanged)" % (old_version, version))
            return 0

    blob = compile_object(args.cc, args.ld)
    problems = check_object(blob)
    if problems:
        for p in problems:
            print("purgatory: ERROR: %s" % p, file=sys.stderr)
        return 2
    text = render_module(blob, version, src_digest)
    if args.check:
        if text != old_text:
            print("purgatory: STALE: %s does not match a fresh build; run python purgatory/build.py"
                  % OUTPUT)
            return 1
        print("purgatory: %s is up to date (%d-byte object, %s)" % (OUTPUT, len(blob), version))
        return 0
    with open(OUTPUT, "w") as f:
        f.write(text)
    print("purgatory: wrote %s (%d-byte object, sha256 %s, %s)"
          % (OUTPUT, len(blob), hashlib.sha256(blob).hexdigest(), version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
