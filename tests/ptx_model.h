// What the warp-collective PTX instructions of the tensor-core kernels compute, from the PTX ISA,
// as plain functions of the 32 lanes' operands. Shared by the two CPU runners of those kernels:
// tests/tensor_core_emulator.cpp (the block bodies) and tests/simt/tensor_core_arch.h (the whole
// CUDA file, host launchers included). Test tooling, not part of the extension.
// tests/ptx_model_check.cpp checks the fragment layouts below against those of NVIDIA's CuTe library.
#pragma once

#include <cstdint>
#include <cstring>

namespace ptx_model {

// The element types of mma.sync, as the tensor core reads a 32-bit fragment register.
enum class Kind { bf16, f16, tf32 };

inline float bits_to_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline float bf16_to_float(uint16_t bits) { return bits_to_float(uint32_t{bits} << 16); }

inline float f16_to_float(uint16_t bits) {
  const uint32_t sign = (uint32_t{bits} & 0x8000u) << 16;
  const int exp = (bits >> 10) & 0x1f;
  const uint32_t mant = bits & 0x3ffu;
  if (exp == 0) {
    const float m = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
    return sign ? -m : m;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | (static_cast<uint32_t>(exp - 15 + 127) << 23) | (mant << 13));
}

// cvt.rna.tf32.f32: 10 mantissa bits, round to nearest with ties away from zero (half an ulp added
// to the magnitude bits), the 13 low bits cleared; NaN and infinity unchanged.
inline uint32_t round_to_tf32(uint32_t x) {
  if ((x & 0x7f800000u) == 0x7f800000u) return x;
  return (x + 0x1000u) & 0xffffe000u;
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 for the whole warp: rows[8 i + r] is the address
// lane 8 i + r gave (row r of matrix i, 8 consecutive b16). Register i of lane l receives row l / 4,
// elements 2 (l % 4) and +1 of matrix i (.trans: column l / 4, rows 2 (l % 4) and +1).
inline void ldmatrix_x4(const unsigned char* const (&rows)[32], bool trans, uint32_t (&out)[32][4]) {
  auto element = [&](int i, int row, int col) {
    uint16_t v;
    std::memcpy(&v, rows[8 * i + row] + 2 * col, 2);
    return uint32_t{v};
  };
  for (int lane = 0; lane < 32; ++lane) {
    const int a = lane / 4, b = 2 * (lane % 4);
    for (int i = 0; i < 4; ++i) {
      out[lane][i] =
          trans ? element(i, b, a) | (element(i, b + 1, a) << 16) : element(i, a, b) | (element(i, a, b + 1) << 16);
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.f32 and m16n8k8.row.col.f32.tf32.tf32.f32 for
// the whole warp: D = A B + C from every lane's fragments (lane = 4 group + tig), into every lane's
// four D registers. A tf32 operand is the upper 19 bits of its register. Products are summed in
// double and rounded once to float (the hardware's order and rounding differ slightly; the tests'
// tolerances allow for that).
inline void mma(Kind kind, const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], const float (&c)[32][4],
                float (&d)[32][4]) {
  const int depth = kind == Kind::tf32 ? 8 : 16;
  float A[16][16], B[16][8], C[16][8];
  auto half = [&](uint32_t v, int which) {
    const uint16_t bits = static_cast<uint16_t>(which ? v >> 16 : v & 0xffffu);
    return kind == Kind::bf16 ? bf16_to_float(bits) : f16_to_float(bits);
  };
  auto tf32 = [](uint32_t v) { return bits_to_float(v & 0xffffe000u); };
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    C[g][2 * t] = c[l][0], C[g][2 * t + 1] = c[l][1];
    C[g + 8][2 * t] = c[l][2], C[g + 8][2 * t + 1] = c[l][3];
    if (kind == Kind::tf32) {  // A 16x8: (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); B 8x8: (t, g), (t + 4, g)
      A[g][t] = tf32(a[l][0]), A[g + 8][t] = tf32(a[l][1]);
      A[g][t + 4] = tf32(a[l][2]), A[g + 8][t + 4] = tf32(a[l][3]);
      B[t][g] = tf32(b[l][0]), B[t + 4][g] = tf32(b[l][1]);
      continue;
    }
    A[g][2 * t] = half(a[l][0], 0), A[g][2 * t + 1] = half(a[l][0], 1);
    A[g + 8][2 * t] = half(a[l][1], 0), A[g + 8][2 * t + 1] = half(a[l][1], 1);
    A[g][2 * t + 8] = half(a[l][2], 0), A[g][2 * t + 9] = half(a[l][2], 1);
    A[g + 8][2 * t + 8] = half(a[l][3], 0), A[g + 8][2 * t + 9] = half(a[l][3], 1);
    B[2 * t][g] = half(b[l][0], 0), B[2 * t + 1][g] = half(b[l][0], 1);
    B[2 * t + 8][g] = half(b[l][1], 0), B[2 * t + 9][g] = half(b[l][1], 1);
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; ++e) {
      double s = C[rows[e]][cols[e]];
      for (int k = 0; k < depth; ++k) s += double(A[rows[e]][k]) * double(B[k][cols[e]]);
      d[l][e] = static_cast<float>(s);
    }
  }
}

}  // namespace ptx_model
