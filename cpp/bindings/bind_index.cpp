// Bindings for the index kernels (crevkit/index.hpp).
#include "pybind.hpp"

#include "crevkit/index.hpp"

namespace {

using farr = py::array_t<float, py::array::c_style>;
using iarr = py::array_t<int64_t, py::array::c_style>;

farr rerank_distances(const farr& vectors, const farr& queries, const iarr& labels, int n_threads) {
    using crevkit::bind::require;
    crevkit::bind::require_ndim(vectors, 2, "vectors");
    crevkit::bind::require_ndim(queries, 2, "queries");
    crevkit::bind::require_ndim(labels, 2, "labels");
    require(vectors.shape(1) == queries.shape(1), "queries: must have as many columns as vectors");
    require(labels.shape(0) == queries.shape(0), "labels: need one row per query");
    require(n_threads >= 1, "n_threads: must be >= 1");
    const int64_t n = vectors.shape(0), d = vectors.shape(1), m = queries.shape(0), c = labels.shape(1);
    farr out({m, c});
    const float* vp = vectors.data();
    const float* qp = queries.data();
    const int64_t* lp = labels.data();
    float* op = out.mutable_data();
    {
        // Safe without the GIL: the kernel only reads and writes these raw
        // buffers, which the argument and result arrays keep alive until we
        // return; the index's query threads run this concurrently.
        py::gil_scoped_release release;
        crevkit::index::rerank_distances(vp, n, d, qp, m, lp, c, n_threads, op);
    }
    return out;
}

}  // namespace

void register_index(py::module_& m) {
    m.def("rerank_distances", &rerank_distances, py::arg("vectors").noconvert(), py::arg("queries").noconvert(),
          py::arg("labels").noconvert(), py::arg("n_threads"),
          "Squared distances max(2 - 2 q.v, 0) of unit queries to candidate rows (raw kernel; "
          "use crevkit.index.rerank_distances).");
}
