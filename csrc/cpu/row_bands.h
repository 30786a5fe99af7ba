// How NCHW layers are cut into work items on the CPU: (image, slab of channels, band of destination
// rows), each of which a thread transposes into channels_last buffers of its own, computes there
// and transposes back (skeleton_conv2d_cpu.cpp: depthwise_slabs, gather_gemm_in_bands,
// weight_grad_in_bands). Plain integers and tap maps: which rows and channels an item covers,
// never a tensor. Every count here depends on the layer's shape only, never on the thread count,
// because the weight gradients sum per item and their bits must not depend on the threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../tap_map.h"

namespace skeleton_cuda {
namespace cpu {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kSlabUnit = 16;                      // channels per slab: a multiple of this
constexpr int64_t kSlabElements = 16384;               // and about this many elements, where planes are small
constexpr int64_t kMaxSlabBytes = int64_t{8} << 20;  // per buffer; larger planes convert the whole tensor

// Channels per slab for C channels of `plane` pixels (the larger plane): kSlabUnit on large planes,
// more on small ones, where the kernel's per-row costs (border columns, setup) would otherwise
// dominate a slab of a few hundred elements.
inline int64_t slab_channels(int64_t C, int64_t plane) {
  const int64_t wanted = std::max<int64_t>(1, kSlabElements / (plane * kSlabUnit)) * kSlabUnit;
  return std::min(wanted, ceil_div(C, kSlabUnit) * kSlabUnit);
}

// Work items per layer the slabs aim for: with few images and channels, each slab's rows are split
// into bands, so that a machine with many cores still has work for them (one image of 16 channels
// was one item: on this project's 2-core VM, 1 x 16 x 112 x 112 in float32 went 0.113 -> 0.085 ms
// forward and 0.206 -> 0.159 ms backward with bands, interleaved medians of 60; layers with enough
// items already were unchanged). A constant, not the thread count: the weight gradient sums per
// band, and its bits must not depend on the threads.
constexpr int64_t kSlabItems = 32;
constexpr int64_t kMinBandRows = 8;  // thinner bands would transpose too many halo rows (2 of 8 here)

inline int64_t slab_bands(int64_t batch, int64_t blocks, int64_t dst_h) {
  const int64_t wanted = ceil_div(kSlabItems, batch * blocks);
  return std::max<int64_t>(1, std::min(wanted, dst_h / kMinBandRows));
}

// The destination rows [r0, r1) of `maps` (one image, a common destination), as maps of their own:
// destination row r0 becomes row 0, and the source rows they read, [src_first, src_first +
// src_rows) of the image, become rows 0, 1, ... of a buffer that holds only those. A tap whose row
// is outside the image stays outside the band's rows, so it still reads nothing. Only the maps with
// grid rows in the band are kept (one at least, so that maps[0] exists): at a stride
// far beyond the image the input gradient has up to a million residue classes, and a copy of each
// in each of 32 bands took gigabytes.
struct RowBand {
  std::vector<TapMap> maps;
  int64_t src_first = 0, src_rows = 0;
};

inline RowBand row_band(const std::vector<TapMap>& maps, int64_t r0, int64_t r1) {
  RowBand band;
  std::vector<int64_t> first_grid_row;
  std::vector<const TapMap*> source;  // the map each kept one comes from
  int64_t lo = 0, hi = 0;
  bool any = false;
  for (const TapMap& m : maps) {
    // the grid rows i whose destination row dst_row0 + dst_row_step * i is in [r0, r1)
    const int64_t i0 = std::min(m.grid_h, r0 <= m.dst_row0 ? 0 : ceil_div(r0 - m.dst_row0, m.dst_row_step));
    const int64_t i1 = std::min(m.grid_h, r1 <= m.dst_row0 ? 0 : ceil_div(r1 - m.dst_row0, m.dst_row_step));
    TapMap b = m;
    b.dst_h = r1 - r0;
    b.grid_h = std::max<int64_t>(0, i1 - i0);
    b.dst_row0 = m.dst_row0 + m.dst_row_step * i0 - r0;
    for (int t = 0; t < m.num_taps && i0 < i1; ++t) {
      const int64_t top = std::max<int64_t>(0, m.src_row_step * i0 + m.src_row_off[t]);
      const int64_t bottom = std::min(m.src_h, m.src_row_step * (i1 - 1) + m.src_row_off[t] + 1);
      if (top < bottom) {
        lo = any ? std::min(lo, top) : top;
        hi = any ? std::max(hi, bottom) : bottom;
        any = true;
      }
    }
    if (b.grid_h > 0 || (band.maps.empty() && &m == &maps.back())) {
      band.maps.push_back(b);
      first_grid_row.push_back(i0);
      source.push_back(&m);
    }
  }
  band.src_first = lo;
  band.src_rows = hi - lo;
  for (size_t k = 0; k < band.maps.size(); ++k) {
    TapMap& b = band.maps[k];
    b.src_h = band.src_rows;
    for (int t = 0; t < b.num_taps; ++t) {
      b.src_row_off[t] = source[k]->src_row_off[t] + source[k]->src_row_step * first_grid_row[k] - lo;
    }
  }
  return band;
}

// How a layer splits into (image, slab, band) items, for `maps` of one image whose destination has
// dst_h x dst_w pixels per plane.
struct SlabPlan {
  int64_t channels = 0, slab = 0, blocks = 0, band_rows = 0, dst_h = 0;
  std::vector<RowBand> bands;

  struct Item {
    int64_t n, block, c0, count;  // image; slab: index, first channel, channels
    int64_t band_index;
    const RowBand* band;
    int64_t r0, rows;             // the band's destination rows
  };
  int64_t items(int64_t batch) const { return batch * blocks * static_cast<int64_t>(bands.size()); }
  Item item(int64_t i) const {
    const int64_t num_bands = static_cast<int64_t>(bands.size());
    const int64_t n = i / (blocks * num_bands), b = i / num_bands % blocks, k = i % num_bands;
    const int64_t r0 = k * band_rows;
    return {n, b, b * slab, std::min(slab, channels - b * slab), k, &bands[k], r0, std::min(band_rows, dst_h - r0)};
  }
};

inline SlabPlan slab_plan(const std::vector<TapMap>& maps, int64_t batch, int64_t C, int64_t src_plane, int64_t dst_h,
                   int64_t dst_w) {
  SlabPlan plan;
  plan.channels = C;
  plan.slab = slab_channels(C, std::max(src_plane, dst_h * dst_w));
  plan.blocks = ceil_div(C, plan.slab);
  plan.dst_h = dst_h;
  plan.band_rows = ceil_div(dst_h, slab_bands(batch, plan.blocks, dst_h));
  for (int64_t r0 = 0; r0 < dst_h; r0 += plan.band_rows) {
    plan.bands.push_back(row_band(maps, r0, std::min(dst_h, r0 + plan.band_rows)));
  }
  return plan;
}

constexpr int64_t kBandBytes = int64_t{512} << 10;  // a band's two buffers together, about (the halo rows come on top)

struct BandPlan {
  int64_t band_rows = 0, dst_h = 0;
  std::vector<RowBand> bands;

  struct Item {
    int64_t n;                 // image
    const RowBand* band;
    int64_t r0, rows;          // the band's destination rows
  };
  int64_t items(int64_t batch) const { return batch * static_cast<int64_t>(bands.size()); }
  Item item(int64_t i) const {
    const int64_t count = static_cast<int64_t>(bands.size()), k = i % count, r0 = k * band_rows;
    return {i / count, &bands[k], r0, std::min(band_rows, dst_h - r0)};
  }
  // Source rows of the tallest band: what a thread's source buffer must hold.
  int64_t most_src_rows() const {
    int64_t rows = 0;
    for (const RowBand& band : bands) rows = std::max(rows, band.src_rows);
    return rows;
  }
};

// Rows per band for a destination of dst_h rows whose buffers take `band_row_bytes` per destination
// row (its own and the source rows it reads): as tall as kBandBytes allows, and enough bands for
// kSlabItems items over the batch, down to kMinBandRows rows.
inline int64_t band_rows_for(int64_t batch, int64_t dst_h, int64_t band_row_bytes) {
  const int64_t by_bytes = std::max<int64_t>(1, kBandBytes / std::max<int64_t>(1, band_row_bytes));
  const int64_t wanted_bands = std::max<int64_t>(1, std::min(ceil_div(kSlabItems, batch), dst_h / kMinBandRows));
  return std::max<int64_t>(1, std::min({by_bytes, ceil_div(dst_h, wanted_bands), dst_h}));
}

// The bands of `band_rows` destination rows (the last one shorter) of `maps` (one image, dst_h rows).
inline BandPlan band_plan(const std::vector<TapMap>& maps, int64_t dst_h, int64_t band_rows) {
  BandPlan plan;
  plan.dst_h = dst_h;
  plan.band_rows = band_rows;
  for (int64_t r0 = 0; r0 < dst_h; r0 += band_rows) {
    plan.bands.push_back(row_band(maps, r0, std::min(dst_h, r0 + band_rows)));
  }
  return plan;
}

// The partial sums of an NCHW weight gradient in bands: its items split into this many fixed runs,
// each summed into a whole weight gradient of its own (so they must stay few), added up in order.
constexpr int64_t kWgradSlots = 16;

inline int64_t wgrad_slots(int64_t items) {
  return std::min(items, kWgradSlots);
}

}  // namespace cpu
}  // namespace skeleton_cuda
