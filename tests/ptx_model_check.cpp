// An independent check of tests/ptx_model.h, the reading of the PTX ISA that the tensor-core
// emulator and the CPU runtime use for ldmatrix and mma.sync: the fragment layouts it implies must
// equal the ones NVIDIA's CuTe library (CUTLASS, include/cute/atom/mma_traits_sm80.hpp and
// copy_traits_sm75.hpp) declares for the same instructions, which CUTLASS's kernels run on real
// GPUs. The layouts are copied below as data, the (shape, stride) numbers of CuTe's definitions;
// the evaluator and the checks are ours.
//
// A CuTe layout maps a (thread, value) coordinate to an index: each mode's coordinate is split
// colexicographically over the mode's shape (first extent fastest) and dotted with its strides.
//   mma: A's index is m + M k, B's n + N k, C's m + M n (column-major), and value v of a thread sits
//        in fragment register v / 2 (low half first) for 16-bit types, register v for tf32.
//   ldmatrix: the source layout maps (lane, bit of the 128-bit row that lane addresses) and the
//        destination layout (lane, bit of its registers, register-major) to the same reference
//        bit, so a destination bit must equal the source bit with the same reference index.
// The checks drive ptx_model with random operands placed by those layouts and compare: mma against
// a plain product, ldmatrix bit for bit. Built and run by tests/test_ptx_model.py; exit status 0
// and "ALL OK" when every check passes.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ptx_model.h"

namespace {

// One mode of a layout, flattened: extents and strides, first extent fastest.
struct Mode {
  std::vector<int> shape, stride;
  int size() const {
    int n = 1;
    for (int s : shape) n *= s;
    return n;
  }
  int operator()(int coord) const {
    int index = 0;
    for (size_t i = 0; i < shape.size(); ++i) {
      index += (coord % shape[i]) * stride[i];
      coord /= shape[i];
    }
    return index;
  }
};

// A (thread, value) layout.
struct ThrVal {
  Mode thr, val;
  int operator()(int t, int v) const { return thr(t) + val(v); }
};

int failures = 0;

void expect(bool ok, const char* what, int lane, int item) {
  if (!ok && failures++ < 10) std::printf("MISMATCH %s: lane %d, item %d\n", what, lane, item);
}

// ---- mma.sync -----------------------------------------------------------------------------------

// CuTe, MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN> (and F16): A ((4,8),(2,2,2)):((32,1),(16,8,128)),
// B ((4,8),(2,2)):((16,1),(8,64)), C ((4,8),(2,2)):((32,1),(16,8)).
const ThrVal kA16{{{4, 8}, {32, 1}}, {{2, 2, 2}, {16, 8, 128}}};
const ThrVal kB16{{{4, 8}, {16, 1}}, {{2, 2}, {8, 64}}};
// MMA_Traits<SM80_16x8x8_F32TF32TF32F32_TN>: A ((4,8),(2,2)):((16,1),(8,64)), B ((4,8),2):((8,1),32).
const ThrVal kATf32{{{4, 8}, {16, 1}}, {{2, 2}, {8, 64}}};
const ThrVal kBTf32{{{4, 8}, {8, 1}}, {{2}, {32}}};
// SM80_16x8_Row, the C layout of both.
const ThrVal kC{{{4, 8}, {32, 1}}, {{2, 2}, {16, 8}}};

// Random values exact in every operand type (small integers times a power of two).
float exact_value(std::mt19937& rng) { return static_cast<float>(static_cast<int>(rng() % 17) - 8) * 0.25f; }

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// The 16-bit pattern of a value exact in bf16 or fp16 (|v| <= 2, two fractional bits).
uint16_t half_bits(float v, ptx_model::Kind kind) {
  const uint32_t f = float_bits(v);
  if (kind == ptx_model::Kind::bf16) return static_cast<uint16_t>(f >> 16);
  if (v == 0.0f) return static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const int exp = static_cast<int>((f >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | ((f >> 13) & 0x3ffu));
}

void check_mma(ptx_model::Kind kind, std::mt19937& rng) {
  const bool tf32 = kind == ptx_model::Kind::tf32;
  const int M = 16, N = 8, K = tf32 ? 8 : 16;
  const ThrVal& la = tf32 ? kATf32 : kA16;
  const ThrVal& lb = tf32 ? kBTf32 : kB16;
  std::vector<float> A(M * K), B(N * K), C(M * N);  // column-major, as CuTe indexes them
  for (float& v : A) v = exact_value(rng);
  for (float& v : B) v = exact_value(rng);
  for (float& v : C) v = exact_value(rng);
  uint32_t a[32][4] = {}, b[32][2] = {};
  float c[32][4], d[32][4];
  for (int t = 0; t < 32; ++t) {
    for (int v = 0; v < la.val.size(); ++v) {
      const float x = A[la(t, v)];
      if (tf32) {
        a[t][v] = float_bits(x);
      } else {
        a[t][v / 2] |= uint32_t{half_bits(x, kind)} << (16 * (v % 2));
      }
    }
    for (int v = 0; v < lb.val.size(); ++v) {
      const float x = B[lb(t, v)];
      if (tf32) {
        b[t][v] = float_bits(x);
      } else {
        b[t][v / 2] |= uint32_t{half_bits(x, kind)} << (16 * (v % 2));
      }
    }
    for (int v = 0; v < 4; ++v) c[t][v] = C[kC(t, v)];
  }
  ptx_model::mma(kind, a, b, c, d);
  for (int t = 0; t < 32; ++t) {
    for (int v = 0; v < 4; ++v) {
      const int index = kC(t, v), m = index % M, n = index / M;
      double expected = C[index];
      for (int k = 0; k < K; ++k) expected += double(A[m + M * k]) * double(B[n + N * k]);
      expect(d[t][v] == static_cast<float>(expected), tf32 ? "mma tf32" : kind == ptx_model::Kind::bf16 ? "mma bf16" : "mma f16",
             t, v);
    }
  }
}

// ---- ldmatrix -----------------------------------------------------------------------------------

// Copy_Traits<SM75_U32x4_LDSM_N>: source (32,128):(128,1), destination (32,(32,4)):(32,(1,1024)).
// Copy_Traits<SM75_U16x8_LDSM_T>: the same source, destination ((4,8),(16,2,4)):((256,16),(1,128,1024)).
const ThrVal kLdsmSrc{{{32}, {128}}, {{128}, {1}}};
const ThrVal kLdsmDst{{{32}, {32}}, {{32, 4}, {1, 1024}}};
const ThrVal kLdsmTransDst{{{4, 8}, {256, 16}}, {{16, 2, 4}, {1, 128, 1024}}};

void check_ldmatrix(bool trans, std::mt19937& rng) {
  // Each lane addresses its own 16-byte row, at scattered places of a buffer.
  std::vector<unsigned char> buffer(32 * 48);
  for (unsigned char& byte : buffer) byte = static_cast<unsigned char>(rng());
  const unsigned char* rows[32];
  for (int lane = 0; lane < 32; ++lane) rows[lane] = buffer.data() + ((lane * 7) % 32) * 48 + 16 * (lane % 3);
  uint32_t out[32][4];
  ptx_model::ldmatrix_x4(rows, trans, out);
  // Reference bit -> source lane and bit (the source layout is one-to-one onto 0 .. 4095).
  std::vector<int> src_lane(4096, -1), src_bit(4096, -1);
  for (int s = 0; s < 32; ++s)
    for (int j = 0; j < 128; ++j) src_lane[kLdsmSrc(s, j)] = s, src_bit[kLdsmSrc(s, j)] = j;
  const ThrVal& dst = trans ? kLdsmTransDst : kLdsmDst;
  for (int t = 0; t < 32; ++t) {
    for (int v = 0; v < 128; ++v) {  // bit v % 32 of register v / 32
      const int ref = dst(t, v);
      const int s = src_lane[ref], j = src_bit[ref];
      const int expected = (rows[s][j / 8] >> (j % 8)) & 1;
      const int actual = (out[t][v / 32] >> (v % 32)) & 1;
      expect(expected == actual, trans ? "ldmatrix .trans" : "ldmatrix", t, v);
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(2024);
  for (int round = 0; round < 20; ++round) {
    check_mma(ptx_model::Kind::bf16, rng);
    check_mma(ptx_model::Kind::f16, rng);
    check_mma(ptx_model::Kind::tf32, rng);
    check_ldmatrix(false, rng);
    check_ldmatrix(true, rng);
  }
  std::printf("%s: %d mismatches\n", failures ? "FAILED" : "ALL OK", failures);
  return failures ? 1 : 0;
}
