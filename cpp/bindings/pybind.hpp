// The single place that includes pybind11 (as in iminuit): every bind_*.cpp
// includes this header, so all bindings see the same configuration.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <array>
#include <cmath>
#include <string>

namespace py = pybind11;

namespace crevkit::bind {

// Backstop checks: the Python wrappers validate first and name the user's
// argument; these only guard the C++ layer when _core is called directly.
template <class T>
inline void require_ndim(const py::array_t<T, py::array::c_style>& a, py::ssize_t ndim, const char* name) {
    if (a.ndim() != ndim)
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                    "-dimensional, got " + std::to_string(a.ndim()));
}

inline void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}

}  // namespace crevkit::bind

// Registration functions, one per area (bind_<area>.cpp).
void register_forward(py::module_& m);
void register_features(py::module_& m);
void register_som(py::module_& m);
void register_index(py::module_& m);
