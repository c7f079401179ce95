// Bindings for the batch self-organizing map kernels (crevkit/som.hpp).
#include "pybind.hpp"

#include "crevkit/som.hpp"

namespace {

using farr = py::array_t<float, py::array::c_style>;
using darr = py::array_t<double, py::array::c_style>;
using iarr = py::array_t<int64_t, py::array::c_style>;
using crevkit::bind::require;
using crevkit::bind::require_ndim;

// Packed layout <-> rows (crevkit::som::pack_codebook).
farr som_pack(const farr& codebook, int n_threads) {
    require_ndim(codebook, 2, "codebook");
    const int64_t k = codebook.shape(0), d = codebook.shape(1);
    require(k > 0 && d > 0, "codebook: must be non-empty");
    require(n_threads >= 1, "n_threads: must be >= 1");
    farr out(crevkit::som::packed_size(k, d));
    const float* wp = codebook.data();
    float* op = out.mutable_data();
    // Safe without the GIL: raw buffers kept alive by this frame.
    py::gil_scoped_release release;
    crevkit::som::pack_codebook(wp, k, d, op, n_threads);
    return out;
}

farr som_unpack(const farr& packed, int64_t n_nodes, int64_t d, std::optional<farr> offset, int n_threads) {
    require(n_nodes > 0 && d > 0, "n_nodes, d: must be > 0");
    require(packed.ndim() == 1 && packed.shape(0) == crevkit::som::packed_size(n_nodes, d),
            "packed: size does not match n_nodes x d");
    if (offset) require(offset->ndim() == 1 && offset->shape(0) == d, "offset: must have d values");
    require(n_threads >= 1, "n_threads: must be >= 1");
    farr out({n_nodes, d});
    const float* pp = packed.data();
    const float* op = offset ? offset->data() : nullptr;
    float* wp = out.mutable_data();
    // Safe without the GIL: raw buffers kept alive by this frame.
    py::gil_scoped_release release;
    crevkit::som::unpack_codebook(pp, n_nodes, d, op, wp, n_threads);
    return out;
}

// (X, mean, packed codebook) -> (bmu, second, d1, d2); accumulates into sums / counts when given.
py::tuple som_bmu(const farr& X, const farr& mean, const farr& packed, int64_t k, std::optional<darr> sums,
                  std::optional<darr> counts, int64_t chunk_rows, int n_threads, bool exact) {
    require_ndim(X, 2, "X");
    const int64_t n = X.shape(0), d = X.shape(1);
    require(d > 0, "X: must have at least one feature");
    require(k > 0, "n_nodes: must be >= 1");
    require(packed.ndim() == 1 && packed.shape(0) == crevkit::som::packed_size(k, d),
            "codebook: packed size does not match n_nodes x X's feature count " + std::to_string(d));
    require(mean.ndim() == 1 && mean.shape(0) == d, "mean: must have one value per feature");
    require(chunk_rows > 0, "chunk_rows: must be > 0");
    require(n_threads >= 1, "n_threads: must be >= 1");
    require(sums.has_value() == counts.has_value(), "sums and counts: give both or neither");
    double* sp = nullptr;
    double* cp = nullptr;
    if (sums) {
        require(sums->ndim() == 2 && sums->shape(0) == k && sums->shape(1) == d, "sums: must be nodes x features");
        require(counts->ndim() == 1 && counts->shape(0) == k, "counts: must have one value per node");
        require(sums->writeable() && counts->writeable(), "sums, counts: must be writeable");
        sp = sums->mutable_data();
        cp = counts->mutable_data();
    }
    iarr bmu(n), second(n);
    farr d1(n), d2(n);
    farr wn(k);
    const float* xp = X.data();
    const float* mp = mean.data();
    const float* wp = packed.data();
    float* wnp = wn.mutable_data();
    int64_t* bp = bmu.mutable_data();
    int64_t* sp2 = second.mutable_data();
    float* d1p = d1.mutable_data();
    float* d2p = d2.mutable_data();
    {
        // Safe without the GIL: the kernel only touches these raw buffers, which
        // the argument and result arrays (held by this frame) keep alive.
        py::gil_scoped_release release;
        crevkit::som::node_norms(wp, k, d, wnp, n_threads);
        crevkit::som::bmu_accumulate(xp, n, d, mp, wp, wnp, k, chunk_rows, bp, sp2, d1p, d2p, sp, cp, n_threads,
                                     exact);
    }
    return py::make_tuple(bmu, second, d1, d2);
}

void som_accumulate(const farr& X, const farr& mean, const iarr& bmu, darr& sums, darr& counts, int n_threads) {
    require_ndim(X, 2, "X");
    const int64_t n = X.shape(0), d = X.shape(1);
    require(mean.ndim() == 1 && mean.shape(0) == d, "mean: must have one value per feature");
    require(bmu.ndim() == 1 && bmu.shape(0) == n, "bmu: must have one value per row of X");
    require(sums.ndim() == 2 && sums.shape(1) == d, "sums: must be nodes x features");
    const int64_t k = sums.shape(0);
    require(counts.ndim() == 1 && counts.shape(0) == k, "counts: must have one value per node");
    require(n_threads >= 1, "n_threads: must be >= 1");
    const float* xp = X.data();
    const float* mp = mean.data();
    const int64_t* bp = bmu.data();
    double* sp = sums.mutable_data();
    double* cp = counts.mutable_data();
    // Safe without the GIL: raw buffers kept alive by the caller's arrays.
    py::gil_scoped_release release;
    crevkit::som::accumulate(xp, n, d, mp, bp, k, sp, cp, n_threads);
}

int64_t som_smooth(const darr& sums, const darr& counts, farr& packed, int64_t rows, int64_t cols, int topology,
                   bool toroidal, int neighborhood, double sigma, int n_threads) {
    require(rows >= 1 && cols >= 1, "rows, cols: must be >= 1");
    require(topology == 0 || topology == 1, "topology: 0 (rectangular) or 1 (hexagonal)");
    require(neighborhood == 0 || neighborhood == 1, "neighborhood: 0 (gaussian) or 1 (bubble)");
    require(std::isfinite(sigma) && sigma > 0, "sigma: must be finite and > 0");
    require(n_threads >= 1, "n_threads: must be >= 1");
    const int64_t k = rows * cols;
    require(sums.ndim() == 2 && sums.shape(0) == k, "sums: must be (rows * cols) x features");
    const int64_t d = sums.shape(1);
    require(d > 0, "sums: must have at least one feature");
    require(packed.ndim() == 1 && packed.shape(0) == crevkit::som::packed_size(k, d),
            "codebook: packed size does not match the map and feature count");
    require(counts.ndim() == 1 && counts.shape(0) == k, "counts: must have one value per node");
    require(packed.writeable(), "codebook: must be writeable");
    crevkit::som::Geometry g;
    g.rows = rows;
    g.cols = cols;
    g.topology = static_cast<crevkit::som::Topology>(topology);
    g.toroidal = toroidal;
    const double* sp = sums.data();
    const double* cp = counts.data();
    float* wp = packed.mutable_data();
    // Safe without the GIL: raw buffers kept alive by the caller's arrays.
    py::gil_scoped_release release;
    return crevkit::som::smooth(sp, cp, d, g, static_cast<crevkit::som::Neighborhood>(neighborhood), sigma, wp,
                                n_threads);
}

}  // namespace

void register_som(py::module_& m) {
    m.def("som_pack", &som_pack, py::arg("codebook").noconvert(), py::arg("n_threads"),
          "Pack a nodes x features float32 codebook into the kernel's panel layout (1-D).");
    m.def("som_unpack", &som_unpack, py::arg("packed").noconvert(), py::arg("n_nodes"), py::arg("d"),
          py::arg("offset").noconvert() = py::none(), py::arg("n_threads") = 1,
          "Unpack a packed codebook to nodes x features, adding offset (e.g. the data mean) to every row.");
    m.def("som_bmu", &som_bmu, py::arg("X").noconvert(), py::arg("mean").noconvert(), py::arg("packed").noconvert(),
          py::arg("n_nodes"),
          py::arg("sums").noconvert() = py::none(), py::arg("counts").noconvert() = py::none(),
          py::arg("chunk_rows"), py::arg("n_threads"), py::arg("exact") = true,
          "Best and second-best nodes of X against a centred codebook (raw kernel; use "
          "crevkit.SelfOrganizingMap). Returns (bmu, second, d1, d2): exact distances, or with exact=False "
          "the clamped float32 expansion; accumulates centred rows into sums/counts.");
    m.def("som_accumulate", &som_accumulate, py::arg("X").noconvert(), py::arg("mean").noconvert(),
          py::arg("bmu").noconvert(), py::arg("sums").noconvert(), py::arg("counts").noconvert(),
          py::arg("n_threads"), "Add centred rows of X to sums[bmu] and 1 to counts[bmu] (raw kernel).");
    m.def("som_smooth", &som_smooth, py::arg("sums").noconvert(), py::arg("counts").noconvert(),
          py::arg("packed").noconvert(), py::arg("rows"), py::arg("cols"), py::arg("topology"),
          py::arg("toroidal"), py::arg("neighborhood"), py::arg("sigma"), py::arg("n_threads"),
          "Batch neighbourhood update of a centred codebook in place (raw kernel). Rows of sums whose count is "
          "0 must be zero (the Gaussian path skips them unread). Returns the number of nodes kept for lack of "
          "neighbourhood weight.");
}
