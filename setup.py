"""Build script for the compiled im2col kernel; all metadata lives in pyproject.toml.

``extensions/_im2col_cy.pyx`` is cythonized into ``cnncheck._im2col_cy``.  The
extension is optional: without a working C compiler the package still
installs and :mod:`cnncheck.im2col` falls back to numpy with a warning.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Optimisation flags per compiler family; unknown compilers get their defaults.
COMPILE_ARGS = {
    "unix": ["-O3"],
    "mingw32": ["-O3"],
    "msvc": ["/O2"],
}


class BuildExt(build_ext):
    """build_ext that adds optimisation flags the active compiler understands."""

    def build_extensions(self):
        args = COMPILE_ARGS.get(self.compiler.compiler_type, [])
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + args
        super().build_extensions()


extensions = [
    Extension(
        "cnncheck._im2col_cy",
        ["extensions/_im2col_cy.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        optional=True,
    )
]

ext_modules = cythonize(extensions, compiler_directives={"language_level": 3})
for ext in ext_modules:
    ext.optional = True  # cythonize builds new Extension objects and drops this flag

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
