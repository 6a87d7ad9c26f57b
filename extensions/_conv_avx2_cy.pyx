# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
# The kernels of _conv_cy.pyx, compiled with AVX2 and FMA enabled as
# cnncheck.kernels._conv_avx2_cy; cnncheck.kernels loads this build only on
# CPUs that have both (_conv_cy.cpu_has_avx2_fma).

include "_conv_cy.pyx"
