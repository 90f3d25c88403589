"""The rules every host-side file keeps: Python 3.8 syntax, the standard library only, the license
header, no import cycles, and a core that knows no architecture."""

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG_DIR = os.path.join(REPO, "plugins", "module_utils", "kexec")
PKG = "kexec"
#: Optional modules a host may have, each imported only inside try/except ImportError.
# Imports a file may try, with a fallback: zstandard when installed; receive.py installed alone on
# a dump server imports its sibling flat.py by plain name there.
OPTIONAL = {"zstandard": ("core/decompress.py", "core/initramfs.py"), "flat": ("dump/receive.py",)}
HEADER = "# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)"


def host_files():
    out = []
    for root, dirs, files in os.walk(PKG_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out.extend(os.path.relpath(os.path.join(root, f), PKG_DIR) for f in sorted(files) if f.endswith(".py"))
    return out


def module_name(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PKG] + parts)


def imports_of(rel):
    """(module names imported from the package, top-level non-package modules) of one file,
    function-level imports included (the module bundler follows those too)."""
    with open(os.path.join(PKG_DIR, rel)) as f:
        tree = ast.parse(f.read(), filename=rel, feature_version=(3, 8))
    here = module_name(rel).split(".")
    package = here if rel.endswith("__init__.py") else here[:-1]
    local, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                # "from . import x" may name a submodule; "from .m import x" names names of m.
                candidate = target + "." + alias.name
                local.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.ImportFrom):
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(a.name.split(".")[0] for a in node.names)
    return local, outside


def _exists(name):
    rel = os.path.join(*name.split(".")[1:]) if "." in name else ""
    return os.path.exists(os.path.join(PKG_DIR, rel + ".py")) or os.path.isdir(os.path.join(PKG_DIR, rel))


FILES = host_files()


@pytest.mark.parametrize("rel", FILES)
def test_host_file_is_py38_stdlib_only_with_the_license_header(rel):
    with open(os.path.join(PKG_DIR, rel)) as f:
        src = f.read()
    assert "from __future__ import absolute_import, division, print_function" in src
    assert "__metaclass__ = type" in src
    assert HEADER in src.splitlines()[:4], "%s lacks the license header" % rel
    dummy, outside = imports_of(rel)
    stdlib = getattr(sys, "stdlib_module_names", None)
    for mod in outside:
        if stdlib is not None:
            assert mod in stdlib or mod == "__future__" or rel in OPTIONAL.get(mod, ()), \
                "%s imports non-stdlib %s" % (rel, mod)
    if any(rel in files for files in OPTIONAL.values()):
        assert "except ImportError" in src


def test_no_import_cycles():
    graph = {}
    for rel in FILES:
        local, dummy = imports_of(rel)
        graph[module_name(rel)] = local
    # A package's __init__ is imported before its submodules: an edge to "a.b.c" implies "a.b".
    for name in list(graph):
        graph[name] = set(graph[name])
    state = {}
    cycles = []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if dep == node:
                continue
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _code_words(tree):
    """Identifiers and string constants of a module, docstrings left out (docs may give examples)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_the_core_knows_no_architecture():
    """core/ imports only core/ and errors, and no name or string in its code is an architecture's
    (the ELF spec's machine numbers, EM_*, are the ELF reader's business)."""
    for rel in FILES:
        if not rel.startswith("core" + os.sep):
            continue
        local, dummy = imports_of(rel)
        for dep in local:
            assert dep.startswith(PKG + ".core") or dep == PKG + ".errors", "%s imports %s" % (rel, dep)
        with open(os.path.join(PKG_DIR, rel)) as f:
            tree = ast.parse(f.read())
        for word in _code_words(tree):
            low = word.lower()
            if low.startswith("em_"):
                continue
            for arch in ("x86", "e820", "boot_params", "aarch64", "arm64", "ppc64", "bzimage"):
                assert arch not in low, "%s mentions %s in %r" % (rel, arch, word)
