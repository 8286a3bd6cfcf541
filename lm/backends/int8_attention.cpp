// One-query attention over an int8 KV cache, for x86 CPUs with AVX2 and FMA (int8_cache.py beside it builds and loads it).
//
// query [B, H, 1, Dh] fp32; keys, values [B, H, C, Dh] int8 with one scale per position, key_scales, value_scales
// [B, H, C] fp32 (a cached vector is scale * int8 vector); the first `length` positions are attended.
// -> [B, H, 1, Dh] fp32, softmax(q k^T / sqrt(Dh)) v.
//
// Each (batch, head) row reads its keys and values once, in blocks of 16 positions with an online softmax: the
// scores of a block, then the running maximum, then the block's weighted values. Torch's SDPA and Inductor's
// reductions would first convert the int8 cache to floats in memory, or load it 8 bytes at a time through a buffer.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace {

constexpr int64_t BLOCK = 16;  // positions scored before their values are summed

// 8 int8 -> 8 floats.
inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The sum of each of 8 vectors -> one vector of the 8 sums.
inline __m256 sum_each(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// CHUNKS = Dh / 8: the query and the output accumulator live in registers.
template <int CHUNKS>
void attend_row(const float* query, const int8_t* keys, const float* key_scales, const int8_t* values,
                const float* value_scales, int64_t length, float* out) {
  constexpr int64_t Dh = 8 * CHUNKS;
  const __m256 scale = _mm256_set1_ps(1.0f / std::sqrt(float(Dh)));
  __m256 q[CHUNKS], acc[CHUNKS];
  for (int c = 0; c < CHUNKS; ++c) {
    q[c] = _mm256_mul_ps(_mm256_loadu_ps(query + 8 * c), scale);
    acc[c] = _mm256_setzero_ps();
  }
  alignas(32) float scores[BLOCK];
  float maximum = -INFINITY, total = 0.0f;
  for (int64_t start = 0; start < length; start += BLOCK) {
    const int64_t count = std::min(BLOCK, length - start);
    for (int64_t j = 0; j < BLOCK; j += 8) {
      __m256 dots[8];
      for (int i = 0; i < 8; ++i) {
        dots[i] = _mm256_setzero_ps();
        if (j + i < count) {
          const int8_t* key = keys + (start + j + i) * Dh;
          for (int c = 0; c < CHUNKS; ++c) dots[i] = _mm256_fmadd_ps(q[c], load8(key + 8 * c), dots[i]);
        }
      }
      _mm256_store_ps(scores + j, sum_each(dots));
    }
    float block_maximum = maximum;
    for (int64_t j = 0; j < count; ++j) {
      scores[j] *= key_scales[start + j];
      block_maximum = std::max(block_maximum, scores[j]);
    }
    if (block_maximum > maximum) {  // rescale what was summed under the old maximum
      const float rescale = std::exp(maximum - block_maximum);
      for (int c = 0; c < CHUNKS; ++c) acc[c] = _mm256_mul_ps(acc[c], _mm256_set1_ps(rescale));
      total *= rescale;
      maximum = block_maximum;
    }
    for (int64_t j = 0; j < BLOCK; j += 8) {  // scores -> softmax weights; past `count` they are not read
      const at::vec::Vectorized<float> shifted = _mm256_sub_ps(_mm256_load_ps(scores + j), _mm256_set1_ps(maximum));
      _mm256_store_ps(scores + j, shifted.exp_u20());
    }
    for (int64_t j = 0; j < count; ++j) {
      const float weight = scores[j];
      total += weight;
      const __m256 w = _mm256_set1_ps(weight * value_scales[start + j]);
      const int8_t* value = values + (start + j) * Dh;
      for (int c = 0; c < CHUNKS; ++c) acc[c] = _mm256_fmadd_ps(w, load8(value + 8 * c), acc[c]);
    }
  }
  const __m256 inverse = _mm256_set1_ps(1.0f / total);
  for (int c = 0; c < CHUNKS; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], inverse));
}

at::Tensor int8_decode_attention(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& key_scales,
                                 const at::Tensor& values, const at::Tensor& value_scales, int64_t length) {
  TORCH_CHECK(query.dim() == 4 && query.size(2) == 1 && query.scalar_type() == at::kFloat,
              "query must be fp32 [B, H, 1, Dh], got ", query.sizes(), " ", query.scalar_type());
  TORCH_CHECK(keys.scalar_type() == at::kChar && values.scalar_type() == at::kChar, "keys and values must be int8");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && key_scales.is_contiguous() &&
                  value_scales.is_contiguous(), "the cache buffers must be contiguous");
  const int64_t rows = keys.size(0) * keys.size(1), capacity = keys.size(2), Dh = keys.size(3);
  TORCH_CHECK(length >= 1 && length <= capacity, "length must be in [1, ", capacity, "], got ", length);
  auto kernel = Dh == 16    ? attend_row<2>
                : Dh == 32  ? attend_row<4>
                : Dh == 64  ? attend_row<8>
                : Dh == 128 ? attend_row<16>
                            : nullptr;
  TORCH_CHECK(kernel != nullptr, "head dim must be 16, 32, 64 or 128, got ", Dh);
  const at::Tensor q = query.contiguous();
  at::Tensor out = at::empty_like(q);
  const float* q_ptr = q.data_ptr<float>();
  const int8_t* k_ptr = keys.data_ptr<int8_t>();
  const int8_t* v_ptr = values.data_ptr<int8_t>();
  const float* ks_ptr = key_scales.data_ptr<float>();
  const float* vs_ptr = value_scales.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      kernel(q_ptr + r * Dh, k_ptr + r * capacity * Dh, ks_ptr + r * capacity, v_ptr + r * capacity * Dh,
             vs_ptr + r * capacity, length, out_ptr + r * Dh);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(codeclm, m) {
  m.def("int8_decode_attention(Tensor query, Tensor keys, Tensor key_scales, Tensor values, Tensor value_scales, "
        "SymInt length) -> Tensor");
}

TORCH_LIBRARY_IMPL(codeclm, CPU, m) { m.impl("int8_decode_attention", int8_decode_attention); }
