// Bindings for the waveform forward model (crevkit/forward.hpp).
#include "pybind.hpp"

#include "crevkit/forward.hpp"

namespace {

using farr = py::array_t<float, py::array::c_style>;
using darr = py::array_t<double, py::array::c_style>;

py::tuple simulate_waveforms(const farr& tiles, const farr& weights, const farr& tilt_x, const farr& tilt_y,
                             const darr& pulse, int64_t pulse_centre, int64_t n_samples, double lead_bins,
                             double bins_per_metre, double cos_tilt, bool tilted, bool incidence, double pixel_size,
                             std::array<double, 3> look, bool normalize, int n_threads) {
    using crevkit::bind::require;
    crevkit::bind::require_ndim(tiles, 3, "tiles");
    crevkit::bind::require_ndim(weights, 2, "weights");
    const int64_t n = tiles.shape(0), ny = tiles.shape(1), nx = tiles.shape(2);
    require(ny > 0 && nx > 0, "tiles: each tile must have at least one pixel");
    require(weights.shape(0) == ny && weights.shape(1) == nx, "weights: shape must equal the tile shape");
    require(pulse.ndim() == 2 && pulse.shape(0) == 3 && pulse.shape(1) > 0,
            "pulse: must be a 3 x L array (pulse, first and second differences)");
    require(pulse_centre >= 0 && pulse_centre < pulse.shape(1), "pulse_centre: must index the pulse");
    require(n_samples > 0 && n_samples <= (int64_t{1} << 24), "n_samples: must be in 1 .. 16777216");
    require(std::isfinite(lead_bins) && lead_bins >= 0 && lead_bins < static_cast<double>(n_samples),
            "lead_bins: must be finite and inside the window");
    require(std::isfinite(bins_per_metre) && bins_per_metre > 0, "bins_per_metre: must be finite and > 0");
    require(std::isfinite(cos_tilt) && cos_tilt > 0 && cos_tilt <= 1, "cos_tilt: must be in (0, 1]");
    require(std::isfinite(pixel_size) && pixel_size > 0, "pixel_size: must be finite and > 0");
    require(n_threads >= 1, "n_threads: must be >= 1");
    if (tilted) {
        require(tilt_x.ndim() == 1 && tilt_x.shape(0) == nx, "tilt_x: must have one value per tile column");
        require(tilt_y.ndim() == 1 && tilt_y.shape(0) == ny, "tilt_y: must have one value per tile row");
    }
    crevkit::forward::Options o;
    o.n_samples = n_samples;
    o.lead_bins = lead_bins;
    o.bins_per_metre = bins_per_metre;
    o.cos_tilt = cos_tilt;
    o.tilted = tilted;
    o.incidence = incidence;
    o.pixel_size = pixel_size;
    o.look[0] = look[0]; o.look[1] = look[1]; o.look[2] = look[2];
    o.normalize = normalize;
    o.n_threads = n_threads;

    farr out({n, n_samples});
    py::array_t<uint8_t> status(n);
    const float* tp = tiles.data();
    const float* wp = weights.data();
    const float* txp = tilted ? tilt_x.data() : nullptr;
    const float* typ = tilted ? tilt_y.data() : nullptr;
    const double* pp = pulse.data();
    const int64_t plen = pulse.shape(1);
    float* op = out.mutable_data();
    uint8_t* sp = status.mutable_data();
    {
        // Safe without the GIL: the kernel only touches these raw buffers,
        // which the argument and result arrays keep alive until we return.
        py::gil_scoped_release release;
        crevkit::forward::simulate_waveforms(tp, n, ny, nx, wp, txp, typ, pp, plen, pulse_centre, o, op, sp);
    }
    return py::make_tuple(out, status);
}

}  // namespace

void register_forward(py::module_& m) {
    m.def("simulate_waveforms", &simulate_waveforms, py::arg("tiles").noconvert(), py::arg("weights").noconvert(),
          py::arg("tilt_x").noconvert(), py::arg("tilt_y").noconvert(), py::arg("pulse").noconvert(),
          py::arg("pulse_centre"), py::arg("n_samples"), py::arg("lead_bins"), py::arg("bins_per_metre"),
          py::arg("cos_tilt"), py::arg("tilted"), py::arg("incidence"), py::arg("pixel_size"), py::arg("look"),
          py::arg("normalize"), py::arg("n_threads"),
          "Forward-model waveforms (raw kernel; use crevkit.simulate_waveforms). Returns (waveforms, status) with status 0 ok, 1 no energy, 2 infinite heights.");
}
