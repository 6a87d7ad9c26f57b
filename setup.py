"""Build script for the compiled kernels; all metadata lives in pyproject.toml.

Each ``extensions/_<name>_cy.pyx`` is cythonized into ``cnncheck.kernels._<name>_cy``
(conv, pool, relu), and the convolution kernels a second time, with AVX2 and
FMA enabled, into ``cnncheck.kernels._conv_avx2_cy`` on x86 (loaded only on
CPUs that have both).  The extensions are optional: without a working C
compiler the package still installs and :mod:`cnncheck.kernels` falls back
to numpy with a warning.  OpenMP is used when the compiler accepts it (the
kernels' ``prange`` loops then share their work among threads) and left out
otherwise, where the same loops run serially.
"""

import os
import platform
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

# Optimisation flags per compiler family; unknown compilers get their defaults.
COMPILE_ARGS = {
    "unix": ["-O3"],
    "mingw32": ["-O3"],
    "msvc": ["/O2"],
}
# Flags of the AVX2 and FMA build of the convolution kernels, per compiler family.
AVX2_ARGS = {
    "unix": ["-mavx2", "-mfma"],
    "mingw32": ["-mavx2", "-mfma"],
    "msvc": ["/arch:AVX2"],
}
AVX2_MODULE = "cnncheck.kernels._conv_avx2_cy"
# OpenMP flags per compiler family: (compile args, link args).
OPENMP_ARGS = {
    "unix": (["-fopenmp"], ["-fopenmp"]),
    "mingw32": (["-fopenmp"], ["-fopenmp"]),
    "msvc": (["/openmp"], []),
}
_OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def _compiler_accepts_openmp(compiler, compile_args, link_args) -> bool:
    """Compile and link a tiny OpenMP program; False when the toolchain refuses it."""
    if os.environ.get("CNNCHECK_NO_OPENMP") == "1":
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe_openmp.c")
        with open(source, "w") as handle:
            handle.write(_OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_executable(objects, os.path.join(tmp, "probe_openmp"), extra_postargs=link_args)
        except (CompileError, LinkError):  # the toolchain has no OpenMP: build without it
            return False
    return True


class BuildExt(build_ext):
    """build_ext that adds optimisation flags, and OpenMP when the active compiler supports it."""

    def build_extensions(self):
        kind = self.compiler.compiler_type
        args = list(COMPILE_ARGS.get(kind, []))
        link = []
        omp_compile, omp_link = OPENMP_ARGS.get(kind, (None, None))
        if omp_compile is not None and _compiler_accepts_openmp(self.compiler, omp_compile, omp_link):
            args += omp_compile
            link += omp_link
        for ext in list(self.extensions):
            extra = []
            if ext.name == AVX2_MODULE:
                if kind not in AVX2_ARGS or not _is_x86():
                    self.extensions.remove(ext)  # the baseline build serves every CPU
                    continue
                extra = AVX2_ARGS[kind]
            ext.extra_compile_args = list(ext.extra_compile_args or []) + args + extra
            ext.extra_link_args = list(ext.extra_link_args or []) + link
        super().build_extensions()


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


extensions = [
    Extension(
        name,
        [source],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        optional=True,
    )
    for name, source in (
        ("cnncheck.kernels._conv_cy", "extensions/_conv_cy.pyx"),
        (AVX2_MODULE, "extensions/_conv_avx2_cy.pyx"),
        ("cnncheck.kernels._pool_cy", "extensions/_pool_cy.pyx"),
        ("cnncheck.kernels._relu_cy", "extensions/_relu_cy.pyx"),
    )
]

ext_modules = cythonize(extensions, compiler_directives={"language_level": 3})
for ext in ext_modules:
    ext.optional = True  # cythonize builds new Extension objects and drops this flag

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
