// Bindings for the tile feature kernels (crevkit/features.hpp).
#include "pybind.hpp"

#include "crevkit/features.hpp"

namespace {

using farr = py::array_t<float, py::array::c_style>;
using darr = py::array_t<double, py::array::c_style>;
using iarr = py::array_t<int64_t, py::array::c_style>;

void check_index(const iarr& u, const iarr& v) {
    using crevkit::bind::require;
    require(u.ndim() == 1 && v.ndim() == 1, "u, v: must be 1-D index arrays");
    require(u.shape(0) == v.shape(0), "u, v: must have the same length");
    require(u.shape(0) > 0, "u, v: keep at least one coefficient");
}

py::tuple normalize_tiles(const farr& tiles, double pixel_size, int64_t out_size, int iterations, bool orient,
                          bool edge_fill, int n_threads) {
    using crevkit::bind::require;
    crevkit::bind::require_ndim(tiles, 3, "tiles");
    const int64_t n = tiles.shape(0), ny = tiles.shape(1), nx = tiles.shape(2);
    require(ny >= 8 && nx >= 8, "tiles: each tile must be at least 8 x 8 pixels");
    require(std::isfinite(pixel_size) && pixel_size > 0, "pixel_size: must be finite and > 0");
    require(out_size >= 2 && static_cast<double>(out_size) <= static_cast<double>(std::min(ny, nx)) / std::sqrt(2.0) + 1e-9,
            "out_size: must be in 2 .. min(ny, nx) / sqrt(2)");
    require(iterations >= 1 && iterations <= 100, "iterations: must be in 1 .. 100");
    require(n_threads >= 1, "n_threads: must be >= 1");
    crevkit::features::NormalizeOptions o;
    o.pixel_size = pixel_size;
    o.out_size = out_size;
    o.iterations = iterations;
    o.orient = orient;
    o.edge_fill = edge_fill;
    o.n_threads = n_threads;
    farr out({n, out_size, out_size});
    darr normal({n, int64_t{3}});
    darr angle(n);
    const float* tp = tiles.data();
    float* op = out.mutable_data();
    double* np_ = normal.mutable_data();
    double* ap = angle.mutable_data();
    {
        // Safe without the GIL: the kernel only touches these raw buffers,
        // which the argument and result arrays keep alive until we return.
        py::gil_scoped_release release;
        crevkit::features::normalize_tiles(tp, n, ny, nx, o, op, np_, ap);
    }
    return py::make_tuple(out, normal, angle);
}

farr dct_compress(const farr& tiles, const iarr& u, const iarr& v, int n_threads) {
    using crevkit::bind::require;
    crevkit::bind::require_ndim(tiles, 3, "tiles");
    check_index(u, v);
    require(tiles.shape(1) > 0 && tiles.shape(2) > 0, "tiles: each tile must have at least one pixel");
    require(n_threads >= 1, "n_threads: must be >= 1");
    const int64_t n = tiles.shape(0), ny = tiles.shape(1), nx = tiles.shape(2), k = u.shape(0);
    farr out({n, k});
    const float* tp = tiles.data();
    const int64_t* up = u.data();
    const int64_t* vp = v.data();
    float* op = out.mutable_data();
    {
        // Safe without the GIL: only raw buffers kept alive by the argument/result arrays.
        py::gil_scoped_release release;
        crevkit::features::dct_compress(tp, n, ny, nx, up, vp, k, n_threads, op);
    }
    return out;
}

farr dct_decompress(const farr& coeffs, const iarr& u, const iarr& v, int64_t ny, int64_t nx, int n_threads) {
    using crevkit::bind::require;
    crevkit::bind::require_ndim(coeffs, 2, "coeffs");
    check_index(u, v);
    require(coeffs.shape(1) == u.shape(0), "coeffs: need one column per (u, v) index");
    require(ny > 0 && nx > 0, "shape: must be positive");
    require(n_threads >= 1, "n_threads: must be >= 1");
    const int64_t n = coeffs.shape(0), k = coeffs.shape(1);
    farr out({n, ny, nx});
    const float* cp = coeffs.data();
    const int64_t* up = u.data();
    const int64_t* vp = v.data();
    float* op = out.mutable_data();
    {
        // Safe without the GIL: only raw buffers kept alive by the argument/result arrays.
        py::gil_scoped_release release;
        crevkit::features::dct_decompress(cp, n, k, up, vp, ny, nx, n_threads, op);
    }
    return out;
}

}  // namespace

void register_features(py::module_& m) {
    m.def("normalize_tiles", &normalize_tiles, py::arg("tiles").noconvert(), py::arg("pixel_size"),
          py::arg("out_size"), py::arg("iterations"), py::arg("orient"), py::arg("edge_fill"), py::arg("n_threads"),
          "Normalize tiles (raw kernel; use crevkit.normalize_tiles). Returns (tiles, normal, angle).");
    m.def("dct_compress", &dct_compress, py::arg("tiles").noconvert(), py::arg("u").noconvert(),
          py::arg("v").noconvert(), py::arg("n_threads"),
          "Kept orthonormal DCT-II coefficients (raw kernel; use crevkit.dct_compress).");
    m.def("dct_decompress", &dct_decompress, py::arg("coeffs").noconvert(), py::arg("u").noconvert(),
          py::arg("v").noconvert(), py::arg("ny"), py::arg("nx"), py::arg("n_threads"),
          "Tiles from kept DCT-II coefficients (raw kernel; use crevkit.dct_decompress).");
}
