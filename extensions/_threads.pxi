# Shared by the kernel modules: the OpenMP limit in force, read at call time.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cnn_openmp_threads(void) { return omp_get_max_threads(); }
    #else
    static int cnn_openmp_threads(void) { return 1; }
    #endif
    """
    int cnn_openmp_threads() noexcept nogil


def openmp_threads():
    """The OpenMP runtime's thread limit for the calling thread, as it stands now (1 without OpenMP).

    ``OMP_NUM_THREADS`` sets it at start-up and ``omp_set_num_threads`` (what
    threadpoolctl's limits call) changes it later; :func:`cnncheck.kernels.thread_limit`
    reads it before every kernel call.
    """
    return cnn_openmp_threads()
