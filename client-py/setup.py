"""Build finderd's `_native` extension from libfinderd's C sources.

The sources come from `../client-c` in the repository, or from
`_vendor/client-c` in an sdist (copied there by the sdist command), and are
compiled into the one extension: there is no shared library to find at run
time. `finderd.pth` is placed at the root of site-packages.

The same sources, with `launcher/`, also make `finderd/finderd-python`, the
launcher for this interpreter (build_launcher.py); where it cannot be built
(CPython before 3.11, ...) `finderd/finderd-python.json` says why and the
install goes on without it.
"""

import glob
import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR = os.path.join("_vendor", "client-c")


def client_c_root():
    for root in (os.path.join(HERE, VENDOR), os.path.join(HERE, "..", "client-c")):
        if os.path.isfile(os.path.join(root, "include", "finderd.h")):
            return os.path.normpath(root)
    raise SystemExit("finderd: libfinderd sources not found in ../client-c or " + VENDOR)


def copy_client_c(destination):
    """Copy libfinderd's header and sources (not tests or build output)."""
    root = client_c_root()
    for sub in ("include", "src"):
        target = os.path.join(destination, sub)
        os.makedirs(target, exist_ok=True)
        for path in glob.glob(os.path.join(root, sub, "*.[ch]")):
            shutil.copy2(path, target)
    for name in ("LICENSE", "libfinderd.map"):
        if os.path.exists(os.path.join(root, name)):
            shutil.copy2(os.path.join(root, name), destination)


class BuildExt(build_ext):
    """Compile libfinderd's sources from a private copy inside build_temp."""

    def run(self):
        vendored = os.path.join(self.build_temp, "client-c")
        copy_client_c(vendored)
        for ext in self.extensions:
            ext.sources = ext.sources + sorted(glob.glob(os.path.join(vendored, "src", "*.c")))
            ext.include_dirs = ext.include_dirs + [
                os.path.join(vendored, "include"),
                os.path.join(vendored, "src"),
            ]
        super().run()
        self.build_launcher(vendored)

    def build_launcher(self, vendored):
        """finderd-python beside _native (see build_launcher.py); never fails the install."""
        sys.path.insert(0, HERE)
        try:
            import build_launcher
        finally:
            sys.path.remove(HERE)
        out_dir = os.path.dirname(self.get_ext_fullpath("finderd._native"))
        try:
            build_launcher.build(HERE, vendored, self.build_temp, out_dir)
        except build_launcher.NotBuilt as exc:
            build_launcher.write_meta(out_dir, {"built": False, "reason": str(exc)})
            sys.stderr.write("finderd: the finderd-python launcher was not built: %s\n" % exc)


class BuildPy(build_py):
    """Put finderd.pth at the root of site-packages, beside the package."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, "finderd.pth"), os.path.join(self.build_lib, "finderd.pth"))


class Sdist(sdist):
    """Vendor libfinderd so that the sdist builds on its own."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        copy_client_c(os.path.join(base_dir, VENDOR))


setup(
    ext_modules=[
        Extension(
            "finderd._native",
            sources=["src/finderd/_native.c"],
            define_macros=[("_GNU_SOURCE", "1")],
            extra_compile_args=["-fvisibility=hidden"],
        )
    ],
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy, "sdist": Sdist},
)
