// The primitives of the tensor-core block bodies (csrc/cuda/tensor_core_gemm.cuh: the `Arch`
// interface that DeviceArch implements with PTX) on the SIMT runtime, so that the whole of
// csrc/cuda/tensor_core_kernels.cu, host launchers included, runs on a CPU. ldmatrix and mma.sync
// are warp collectives computed by ../ptx_model.h; cp.async lands at issue (a legal schedule: the
// late-landing ones are tests/tensor_core_emulator.cpp's job, with its bounds checks).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../ptx_model.h"
#include "simt_runtime.h"

namespace simt {

struct TensorCoreArch {
  static void cp_async16(void* smem_dst, const void* src, bool valid) {
    if (valid) {
      std::memcpy(smem_dst, src, 16);
    } else {
      std::memset(smem_dst, 0, 16);
    }
  }
  static void cp_async4(void* smem_dst, const void* src, bool valid) {
    if (valid) {
      std::memcpy(smem_dst, src, 4);
    } else {
      std::memset(smem_dst, 0, 4);
    }
  }
  static void cp_async_commit() {}
  template <int N>
  static void cp_async_wait() {}
  static void sync_threads() { simt::sync_threads(); }

  static void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix(r, p, false); }
  static void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix(r, p, true); }

  template <typename T>
  static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    struct Fragments {
      uint32_t a[4], b[2];
      float c[4];
    };
    Fragments mine;
    std::memcpy(mine.a, a, sizeof(mine.a));
    std::memcpy(mine.b, b, sizeof(mine.b));
    std::memcpy(mine.c, d, sizeof(mine.c));
    warp_collective(3, &mine, sizeof(Fragments), d, sizeof(float) * 4, [](const unsigned char* ins, unsigned char* outs) {
      uint32_t A[32][4], B[32][2];
      float C[32][4], D[32][4];
      for (int l = 0; l < 32; ++l) {
        Fragments f;
        std::memcpy(&f, ins + l * sizeof(Fragments), sizeof(Fragments));
        std::memcpy(A[l], f.a, sizeof(f.a));
        std::memcpy(B[l], f.b, sizeof(f.b));
        std::memcpy(C[l], f.c, sizeof(f.c));
      }
      ptx_model::mma(kind<T>(), A, B, C, D);
      std::memcpy(outs, D, sizeof(D));
    });
  }

  static uint32_t load_shared32(const void* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static uint32_t round_to_tf32(uint32_t x) { return ptx_model::round_to_tf32(x); }

  static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static float to_float(__half v) { return __half2float(v); }
  static float to_float(float v) { return v; }

  template <typename T>
  static void store_pair(T* dst, float v0, float v1) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      dst[0] = __float2bfloat16_rn(v0);
      dst[1] = __float2bfloat16_rn(v1);
    } else if constexpr (std::is_same<T, __half>::value) {
      dst[0] = __float2half_rn(v0);
      dst[1] = __float2half_rn(v1);
    } else {
      dst[0] = v0;
      dst[1] = v1;
    }
  }
  static void copy16(void* dst, const void* src) { std::memcpy(dst, src, 16); }
  static void store_float2(float* dst, float v0, float v1) {
    dst[0] = v0;
    dst[1] = v1;
  }
  static uint32_t load_global16(const void* src) {
    uint16_t v;
    std::memcpy(&v, src, 2);
    return v;
  }
  static void store_shared16(void* dst, uint32_t bits) {
    const uint16_t v = static_cast<uint16_t>(bits);
    std::memcpy(dst, &v, 2);
  }
  template <typename T>
  static void store_element(T* dst, float v) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      *dst = __float2bfloat16_rn(v);
    } else if constexpr (std::is_same<T, __half>::value) {
      *dst = __float2half_rn(v);
    } else {
      *dst = v;
    }
  }

 private:
  template <typename T>
  static constexpr ptx_model::Kind kind() {
    return std::is_same<T, __nv_bfloat16>::value ? ptx_model::Kind::bf16
           : std::is_same<T, __half>::value      ? ptx_model::Kind::f16
                                                 : ptx_model::Kind::tf32;
  }

  static void ldmatrix(uint32_t (&r)[4], const void* p, bool trans) {
    const unsigned char* address = static_cast<const unsigned char*>(p);
    warp_collective(trans ? 2 : 1, &address, sizeof(address), r, sizeof(r), [trans](const unsigned char* ins, unsigned char* outs) {
      const unsigned char* rows[32];
      std::memcpy(rows, ins, sizeof(rows));
      uint32_t out[32][4];
      ptx_model::ldmatrix_x4(rows, trans, out);
      std::memcpy(outs, out, sizeof(out));
    });
  }
};

}  // namespace simt
