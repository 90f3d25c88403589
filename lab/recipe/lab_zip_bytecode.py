"""Lab VMs only (installed by lab/image.py, loaded by lab_zip_bytecode.pth): keep the bytecode
Python compiles for modules imported from zip files.

Ansible runs every module as an AnsiballZ zip under a fresh temporary directory; zipimport never
writes bytecode, so each module run compiles ansible.module_utils.basic and all it imports again
(1.4 s of a 2.5 s `stat` under TCG). This caches the code objects under /var/cache, keyed by the
interpreter's cache tag, the file's name inside the zip and a hash of its source, so the same
source always gives the same code as compile() would; only the filename is set to this run's,
as importlib does for a cached .pyc (_imp._fix_co_filename). Nothing else changes: a source that
differs is a new key, and any error falls back to a plain compile.

Code read from the cache runs as whoever imports it, so it is used only by root, and only while the
directory belongs to root and nobody else may write to it; anyone else compiles as usual.
"""

import zipimport

CACHE = "/var/cache/lab-zip-bytecode"


def _install():
    compile_source = getattr(zipimport, "_compile_source", None)
    if compile_source is None:  # another Python's zipimport: leave it alone
        return

    def cached(pathname, source):
        # Imported here: only processes that import from a zip pay for them.
        import _imp
        import hashlib
        import marshal
        import os
        import sys
        import stat
        try:
            if os.geteuid() != 0:
                return compile_source(pathname, source)
            os.makedirs(CACHE, mode=0o755, exist_ok=True)
            st = os.lstat(CACHE)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                return compile_source(pathname, source)
        except OSError:
            return compile_source(pathname, source)
        if isinstance(source, str):
            source = source.encode("utf-8")
        inner = pathname.split(".zip" + os.sep, 1)[-1]
        key = hashlib.sha256(b"%s\0%s\0" % (sys.implementation.cache_tag.encode(), inner.encode()) + source)
        path = os.path.join(CACHE, key.hexdigest())
        try:
            with open(path, "rb") as f:
                code = marshal.loads(f.read())
            _imp._fix_co_filename(code, pathname)
            return code
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile_source(pathname, source)
        try:
            part = "%s.%d" % (path, os.getpid())
            with open(part, "wb") as f:
                f.write(marshal.dumps(code))
            os.replace(part, path)
        except OSError:  # a full disk: compiling each time is still right
            pass
        return code

    zipimport._compile_source = cached


_install()
