// crevkit._core: the compiled kernels.  Each area registers itself from its
// own bind_<area>.cpp; this file only adds build information.
#include "pybind.hpp"

#if CREVKIT_HAS_OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_core, m) {
    m.doc() = "crevkit compiled kernels (forward model, tile features, SOM, index re-ranking); use the crevkit wrappers";
    m.attr("_has_openmp") = static_cast<bool>(CREVKIT_HAS_OPENMP);
    m.attr("__version__") = CREVKIT_VERSION;
    m.def("_omp_max_threads", []() {
#if CREVKIT_HAS_OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
    }, "Threads OpenMP would use by default (1 without OpenMP).");

    // std::invalid_argument (a user mistake caught in C++) -> crevkit's ValueError subclass.
    static py::object value_error = py::module_::import("crevkit.errors").attr("CrevkitValueError");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(value_error.ptr(), e.what());
        }
    });

    register_forward(m);
    register_features(m);
    register_som(m);
    register_index(m);
}
