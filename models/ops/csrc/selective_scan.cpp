// Fused CPU selective scan (Mamba's S6 recurrence), forward and backward, fp32.
//
// Why: Hugging Face's CPU fallback loops over time in Python and materialises
// (batch, dim, L, dstate) tensors; the cost is memory traffic. Here one task owns a block of
// kLanes channels of one batch entry and runs the recurrence with the channels as SIMD lanes:
// the (dstate x kLanes) state stays in L1, B_t and C_t are broadcast scalars, and nothing
// needs a horizontal (cross-lane) reduction. Softplus and the silu gate are computed in-loop on
// the same lanes with a vectorisable exp. Per-channel inputs and outputs of any strides are
// staged through L1 one (chunk x kLanes) tile at a time, so neither channel-first tensors nor
// HF's channel-last views need a layout copy.
//
// Layouts (all float32, CPU):
//   u, delta, z, dout        : (batch, dim, L), any strides
//   out, du, ddelta, dz      : (batch, dim, L); out channel-last, gradients laid out like inputs
//   A, dA                    : (dim, dstate), contiguous
//   B, C                     : (batch, L, dstate), contiguous (time-major; Python transposes)
//   dB, dC                   : (batch, dstate, L), transposed views of time-major memory
//   D, delta_bias, dD, ...   : (dim,)
//   last_state, dlast        : (batch, dim, dstate), contiguous
//   checkpoints              : (batch, ceil(dim / kLanes), n_chunks, dstate, kLanes), the state
//                              *before* each chunk of `chunk` steps.
//
// Backward: for each block, chunks are visited last to first. A chunk's states and
// exp(delta*A) factors are recomputed from its checkpoint into a per-thread buffer, then the
// adjoint h_t = dy_t C_t + exp(delta_{t+1} A) h_{t+1} runs backwards through it. Extra memory:
// the checkpoints (1/chunk of the state history) plus per-lane partial sums for dB and dC.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

// The hot loops are compiled twice, for AVX2+FMA and for the baseline ISA, and picked at load
// time (GCC function multiversioning): -march=native would break a build cache shared by
// machines with different CPUs, and the baseline (SSE2) code is ~3x slower.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VLAB_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VLAB_CLONES
#endif
#define VLAB_INLINE __attribute__((always_inline)) inline
#define VLAB_INLINE_LAMBDA __attribute__((always_inline))

namespace {

constexpr int64_t kLanes = 8;  // channels per SIMD block: one AVX2 register
constexpr int64_t kMaxState = 256;

// Flushes denormals to zero while alive: decayed states (tiny exp(delta*A) times small x)
// otherwise take the slow denormal path of x86 FPUs.
struct DenormalGuard {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  DenormalGuard() { _mm_setcsr(saved | 0x8040u); }
  ~DenormalGuard() { _mm_setcsr(saved); }
#endif
};

// exp(x) by Cody-Waite reduction and Cephes' degree-5 polynomial (rel. error < 1e-7). Unlike
// std::exp it vectorises inside `omp simd` loops without -ffast-math (the clamps need
// -fno-trapping-math to become blends). Inputs are clamped to [-87.3, 88.3], so exp of a very
// negative number is ~1e-38 rather than 0, which is flushed by DenormalGuard's products.
VLAB_INLINE float vexp(float x) {
  const float lo_clamped = x > -87.3f ? x : -87.3f;
  const float xc = lo_clamped < 88.3f ? lo_clamped : 88.3f;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer.
  const float k = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - k * 0.693145751953125f;
  r = r - k * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
  return p * scale;
}

// log(1 + e) for e in [0, 1] via 2 atanh(e / (2 + e)); the odd series converges as 9^-k.
VLAB_INLINE float vlog1p_unit(float e) {
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

VLAB_INLINE float vsigmoid(float x) { return 1.0f / (1.0f + vexp(-x)); }

// Same threshold as torch.nn.functional.softplus (beta=1, threshold=20).
VLAB_INLINE float vsoftplus(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float smooth = (x > 0.0f ? x : 0.0f) + vlog1p_unit(vexp(-ax));
  return x > 20.0f ? x : smooth;
}

// A (batch, dim, L) float tensor of any strides (HF passes both channel-first tensors and
// transposed views of channel-last ones).
template <typename T>
struct Strided {
  T* ptr = nullptr;
  int64_t sb = 0, sd = 0, st = 0;
};
using In = Strided<const float>;
using Out = Strided<float>;

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  return {t.data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)};
}

// Raw pointers and sizes shared by the forward and backward kernels.
struct Problem {
  In u, delta, z;  // z.ptr is nullptr when absent
  const float* A;
  const float* B;
  const float* C;
  const float* D;           // nullptr when absent
  const float* delta_bias;  // nullptr when absent
  bool softplus;
  int64_t batch, dim, len, dstate, chunk, n_chunks, blocks;

  // Offset of the state before chunk c of (b, block) in the checkpoints.
  int64_t checkpoint(int64_t b, int64_t block, int64_t c) const {
    return ((b * blocks + block) * n_chunks + c) * dstate * kLanes;
  }
};

// Steps [t0, t0 + steps) of channels [d0, d0 + lanes) of batch entry b: the unit of work that
// is staged through L1 as a (steps, kLanes) tile.
struct Tile {
  int64_t b, d0, lanes, t0, steps;
};

// Copies a tile of v into `tile` (steps, kLanes), zero-filling lanes past the last channel.
VLAB_INLINE void load_tile(const In& v, const Tile& r, float* tile) {
  const float* base = v.ptr + r.b * v.sb + r.d0 * v.sd + r.t0 * v.st;
  if (r.lanes < kLanes) {
    std::fill(tile, tile + r.steps * kLanes, 0.0f);
  }
  if (v.sd == 1 && r.lanes == kLanes) {  // channel-last: one vector per step
    for (int64_t j = 0; j < r.steps; ++j) {
#pragma omp simd
      for (int64_t w = 0; w < kLanes; ++w) {
        tile[j * kLanes + w] = base[j * v.st + w];
      }
    }
  } else {
    for (int64_t j = 0; j < r.steps; ++j) {
      for (int64_t w = 0; w < r.lanes; ++w) {
        tile[j * kLanes + w] = base[w * v.sd + j * v.st];
      }
    }
  }
}

// Writes the valid lanes of `tile` (steps, kLanes) into v.
VLAB_INLINE void store_tile(const float* tile, const Tile& r, const Out& v) {
  float* base = v.ptr + r.b * v.sb + r.d0 * v.sd + r.t0 * v.st;
  if (v.sd == 1 && r.lanes == kLanes) {
    for (int64_t j = 0; j < r.steps; ++j) {
#pragma omp simd
      for (int64_t w = 0; w < kLanes; ++w) {
        base[j * v.st + w] = tile[j * kLanes + w];
      }
    }
  } else {
    for (int64_t j = 0; j < r.steps; ++j) {
      for (int64_t w = 0; w < r.lanes; ++w) {
        base[w * v.sd + j * v.st] = tile[j * kLanes + w];
      }
    }
  }
}

void check_input(const at::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dims, got ", t.dim());
}

void check_contiguous(const at::Tensor& t, const char* name, int64_t dims) {
  check_input(t, name, dims);
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

const float* optional_ptr(const std::optional<at::Tensor>& t, const char* name, int64_t size) {
  if (!t.has_value() || !t->defined()) {
    return nullptr;
  }
  check_contiguous(*t, name, t->dim());
  TORCH_CHECK(t->numel() == size, name, " has ", t->numel(), " elements, expected ", size);
  return t->data_ptr<float>();
}

Problem make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                     const at::Tensor& B, const at::Tensor& C,
                     const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                     const std::optional<at::Tensor>& delta_bias, bool softplus, int64_t chunk) {
  check_input(u, "u", 3);
  check_input(delta, "delta", 3);
  check_contiguous(A, "A", 2);
  check_contiguous(B, "B", 3);
  check_contiguous(C, "C", 3);
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), dstate = A.size(1);
  TORCH_CHECK(delta.sizes() == u.sizes(), "delta must have the shape of u");
  TORCH_CHECK(A.size(0) == dim, "A must be (dim, dstate)");
  TORCH_CHECK(dstate >= 1 && dstate <= kMaxState, "dstate must be in [1, ", kMaxState, "]");
  TORCH_CHECK(B.size(0) == batch && B.size(1) == len && B.size(2) == dstate,
              "B must be (batch, L, dstate)");
  TORCH_CHECK(C.sizes() == B.sizes(), "C must be (batch, L, dstate)");
  TORCH_CHECK(chunk >= 1, "chunk must be positive");
  Problem p{};
  p.u = strided<const float>(u);
  p.delta = strided<const float>(delta);
  if (z.has_value() && z->defined()) {
    check_input(*z, "z", 3);
    TORCH_CHECK(z->sizes() == u.sizes(), "z must have the shape of u");
    p.z = strided<const float>(*z);
  }
  p.A = A.data_ptr<float>();
  p.B = B.data_ptr<float>();
  p.C = C.data_ptr<float>();
  p.D = optional_ptr(D, "D", dim);
  p.delta_bias = optional_ptr(delta_bias, "delta_bias", dim);
  p.softplus = softplus;
  p.batch = batch;
  p.dim = dim;
  p.len = len;
  p.dstate = dstate;
  p.chunk = chunk;
  p.n_chunks = std::max<int64_t>(1, (len + chunk - 1) / chunk);
  p.blocks = (dim + kLanes - 1) / kLanes;
  return p;
}

// A (batch, dim, L) output laid out like `like`: channel-last when `like` runs along dim
// fastest (a transposed view, as HF passes u and z), channel-first otherwise. Matching the
// input's layout keeps the consumers' elementwise kernels on their fast path.
at::Tensor empty_like_layout(const at::Tensor& like) {
  const int64_t batch = like.size(0), dim = like.size(1), len = like.size(2);
  if (like.stride(1) < like.stride(2)) {
    return at::empty({batch, len, dim}, like.options()).transpose(1, 2);
  }
  return at::empty({batch, dim, len}, like.options());
}

// Calls fn with a compile-time dstate for Mamba's default of 16 (fixed trip counts unroll;
// ~1.5x faster than the generic loop at small dstate) and with 0, meaning "read p.dstate",
// otherwise. Each specialisation adds ~2.5 s to the JIT build, which CI pays on every fresh
// machine, so there is only one.
template <typename Fn>
void dispatch_dstate(int64_t dstate, Fn&& fn) {
  switch (dstate) {
    case 16: fn(std::integral_constant<int, 16>{}); break;
    default: fn(std::integral_constant<int, 0>{}); break;
  }
}

// Per-block constants: A transposed to (dstate, kLanes), and the D and delta_bias lanes.
// Lanes past the last channel get zeros, which keep their (discarded) states at zero.
struct BlockParams {
  alignas(64) float a[kMaxState * kLanes];
  alignas(32) float d_skip[kLanes];
  alignas(32) float bias[kLanes];

  void load(const Problem& p, int64_t d0, int64_t lanes, int64_t n) {
    std::fill(a, a + n * kLanes, 0.0f);
    for (int64_t w = 0; w < kLanes; ++w) {
      const bool valid = w < lanes;
      for (int64_t i = 0; valid && i < n; ++i) {
        a[i * kLanes + w] = p.A[(d0 + w) * n + i];
      }
      d_skip[w] = valid && p.D ? p.D[d0 + w] : 0.0f;
      bias[w] = valid && p.delta_bias ? p.delta_bias[d0 + w] : 0.0f;
    }
  }
};

// Effective delta of one step's lanes: softplus(delta + bias) or delta + bias.
VLAB_INLINE void step_delta(const Problem& p, const float* raw, const float* bias, float* dt) {
  if (p.softplus) {
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      dt[w] = vsoftplus(raw[w] + bias[w]);
    }
  } else {
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      dt[w] = raw[w] + bias[w];
    }
  }
}

// One step of the recurrence for a block: x <- exp(dt A) prev + dt u B_t, adding the lanes'
// <x, C_t> to y. With kKeepDecay the exp(dt A) factors are stored in `decay` (backward).
// Even and odd states accumulate into separate sums to halve the dependency chain.
template <int kState, bool kKeepDecay>
VLAB_INLINE void step_state(int64_t n, const float* a, const float* dt, const float* du,
                            const float* Bt, const float* Ct, const float* prev, float* x,
                            float* decay, float* y) {
  const int64_t ns = kState > 0 ? kState : n;
  alignas(32) float part[2][kLanes] = {};
  auto update = [&](int64_t i, float* sum) VLAB_INLINE_LAMBDA {
    const float bi = Bt[i], ci = Ct[i];
    const float* ai = a + i * kLanes;
    const float* pi = prev + i * kLanes;
    float* xi = x + i * kLanes;
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      const float e = vexp(dt[w] * ai[w]);
      const float v = e * pi[w] + du[w] * bi;
      xi[w] = v;
      sum[w] += v * ci;
      if constexpr (kKeepDecay) {
        decay[i * kLanes + w] = e;
      }
    }
  };
  for (int64_t i = 0; i + 1 < ns; i += 2) {
    update(i, part[0]);
    update(i + 1, part[1]);
  }
  if (ns % 2) {
    update(ns - 1, part[0]);
  }
#pragma omp simd
  for (int64_t w = 0; w < kLanes; ++w) {
    y[w] += part[0][w] + part[1][w];
  }
}

// Forward ---------------------------------------------------------------------------------

// The tile of batch entry b, channel block `block`, chunk c.
Tile tile_of(const Problem& p, int64_t b, int64_t block, int64_t c) {
  const int64_t d0 = block * kLanes, t0 = c * p.chunk;
  return {b, d0, std::min(kLanes, p.dim - d0), t0, std::min(p.chunk, p.len - t0)};
}

// Forward for tasks [begin, end) of the (batch, block) grid, one chunk tile at a time.
template <int kState>
VLAB_CLONES void forward_blocks(const Problem& p, int64_t begin, int64_t end, const Out& out,
                                float* last, float* checkpoints) {
  const int64_t n = kState > 0 ? kState : p.dstate;
  const int64_t tile_size = p.chunk * kLanes;
  std::vector<float> tiles(4 * tile_size);
  float* u_tile = tiles.data();
  float* delta_tile = u_tile + tile_size;
  float* z_tile = delta_tile + tile_size;
  float* out_tile = z_tile + tile_size;
  BlockParams prm;
  alignas(64) float x[kMaxState * kLanes];
  alignas(32) float dt[kLanes], du[kLanes];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / p.blocks, block = task % p.blocks;
    const Tile first = tile_of(p, b, block, 0);
    prm.load(p, first.d0, first.lanes, n);
    std::fill(x, x + n * kLanes, 0.0f);
    for (int64_t c = 0; c < p.n_chunks && p.len > 0; ++c) {
      const Tile r = tile_of(p, b, block, c);
      if (checkpoints) {
        std::copy(x, x + n * kLanes, checkpoints + p.checkpoint(b, block, c));
      }
      load_tile(p.u, r, u_tile);
      load_tile(p.delta, r, delta_tile);
      if (p.z.ptr) {
        load_tile(p.z, r, z_tile);
      }
      for (int64_t j = 0; j < r.steps; ++j) {
        const int64_t t = r.t0 + j;
        const float* ut = u_tile + j * kLanes;
        float* y = out_tile + j * kLanes;
        step_delta(p, delta_tile + j * kLanes, prm.bias, dt);
#pragma omp simd
        for (int64_t w = 0; w < kLanes; ++w) {
          du[w] = dt[w] * ut[w];
          y[w] = prm.d_skip[w] * ut[w];
        }
        const float* Bt = p.B + (b * p.len + t) * n;
        const float* Ct = p.C + (b * p.len + t) * n;
        step_state<kState, false>(n, prm.a, dt, du, Bt, Ct, x, x, nullptr, y);
        if (p.z.ptr) {
          const float* zt = z_tile + j * kLanes;
#pragma omp simd
          for (int64_t w = 0; w < kLanes; ++w) {
            y[w] *= zt[w] * vsigmoid(zt[w]);
          }
        }
      }
      store_tile(out_tile, r, out);
    }
    for (int64_t w = 0; w < first.lanes; ++w) {
      for (int64_t i = 0; i < n; ++i) {
        last[(b * p.dim + first.d0 + w) * n + i] = x[i * kLanes + w];
      }
    }
  }
}

// Backward --------------------------------------------------------------------------------

// Gradient outputs. A task accumulates dB and dC per lane in its thread's (L, dstate, kLanes)
// buffers, so blocks add vectors without cross-lane sums, and reduces them into its
// (group, batch entry) slice of dB_parts / dC_parts, (groups, batch, L, dstate), at the end.
struct Grads {
  Out du, ddelta, dz;  // dz.ptr is nullptr when z is absent
  In dout;
  float* dA_rows;     // (batch, dim, dstate), summed over batch afterwards
  float* dD_rows;     // (batch, dim), summed over batch afterwards
  float* dbias_rows;  // (batch, dim), summed over batch afterwards
  float* dB_parts;
  float* dC_parts;
  const float* dlast;  // nullptr when the last state received no gradient
  const float* checkpoints;
  int64_t groups;
};

// Per-thread scratch: one chunk tile's recomputed states, decay factors, effective deltas,
// pre-gate outputs and staged input / gradient tiles, all (steps, [dstate,] kLanes); and the
// per-lane dB, dC sums of the current task, (L, dstate, kLanes).
struct Scratch {
  std::vector<float> x, decay, dt, y, u, delta, z, dout, du, ddelta, dz, dB_lanes, dC_lanes;
  Scratch(const Problem& p, int64_t n)
      : x(p.chunk * n * kLanes), decay(p.chunk * n * kLanes), dt(p.chunk * kLanes),
        y(p.chunk * kLanes), u(p.chunk * kLanes), delta(p.chunk * kLanes),
        z(p.chunk * kLanes), dout(p.chunk * kLanes), du(p.chunk * kLanes),
        ddelta(p.chunk * kLanes), dz(p.chunk * kLanes), dB_lanes(p.len * n * kLanes),
        dC_lanes(p.len * n * kLanes) {}
};

// Running gradient sums of one block and the adjoint carried between chunks.
struct BlockAcc {
  alignas(64) float h[kMaxState * kLanes];   // exp(delta_{t+1} A) h_{t+1}
  alignas(64) float dA[kMaxState * kLanes];  // (dstate, kLanes)
  alignas(32) float dD[kLanes];
  alignas(32) float dbias[kLanes];
};

// Recomputes the tile's steps from the state x0 into `s` (its u and delta tiles are loaded).
template <int kState>
VLAB_INLINE void recompute_chunk(const Problem& p, const BlockParams& prm, const Tile& r,
                                 const float* x0, Scratch& s) {
  const int64_t n = kState > 0 ? kState : p.dstate;
  alignas(32) float du[kLanes];
  const float* prev = x0;
  for (int64_t j = 0; j < r.steps; ++j) {
    const int64_t t = r.t0 + j;
    const float* ut = s.u.data() + j * kLanes;
    float* dt = s.dt.data() + j * kLanes;
    float* y = s.y.data() + j * kLanes;
    step_delta(p, s.delta.data() + j * kLanes, prm.bias, dt);
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      du[w] = dt[w] * ut[w];
      y[w] = prm.d_skip[w] * ut[w];
    }
    float* xj = s.x.data() + j * n * kLanes;
    const float* Bt = p.B + (r.b * p.len + t) * n;
    const float* Ct = p.C + (r.b * p.len + t) * n;
    step_state<kState, true>(n, prm.a, dt, du, Bt, Ct, prev, xj, s.decay.data() + j * n * kLanes,
                             y);
    prev = xj;
  }
}

// Splits d(out) of step j's lanes into d(y) (returned in dy) and d(z) (into the dz tile).
VLAB_INLINE void step_gate_grad(const Problem& p, int64_t j, Scratch& s, float* dy) {
  const float* dout = s.dout.data() + j * kLanes;
  if (!p.z.ptr) {
    std::copy(dout, dout + kLanes, dy);
    return;
  }
  const float* zt = s.z.data() + j * kLanes;
  const float* y = s.y.data() + j * kLanes;
  float* dz = s.dz.data() + j * kLanes;
#pragma omp simd
  for (int64_t w = 0; w < kLanes; ++w) {
    const float sz = vsigmoid(zt[w]);
    dz[w] = dout[w] * y[w] * sz * (1.0f + zt[w] * (1.0f - sz));
    dy[w] = dout[w] * zt[w] * sz;
  }
}

// Reverse (adjoint) pass over one recomputed chunk tile, filling the du, ddelta, dz tiles.
template <int kState>
VLAB_INLINE void reverse_chunk(const Problem& p, const BlockParams& prm, const Tile& r,
                               const float* x0, Scratch& s, BlockAcc& acc) {
  const int64_t n = kState > 0 ? kState : p.dstate;
  const int64_t ns = kState > 0 ? kState : n;
  alignas(32) float dy[kLanes], du[kLanes];
  alignas(32) float sum_hB[2][kLanes], sum_decay[2][kLanes];
  for (int64_t j = r.steps - 1; j >= 0; --j) {
    const int64_t t = r.t0 + j;
    const float* dt = s.dt.data() + j * kLanes;
    const float* ut = s.u.data() + j * kLanes;
    step_gate_grad(p, j, s, dy);
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      du[w] = dt[w] * ut[w];
      acc.dD[w] += dy[w] * ut[w];
      sum_hB[0][w] = sum_hB[1][w] = 0.0f;
      sum_decay[0][w] = sum_decay[1][w] = 0.0f;
    }
    const float* Bt = p.B + (r.b * p.len + t) * n;
    const float* Ct = p.C + (r.b * p.len + t) * n;
    const float* xj = s.x.data() + j * n * kLanes;
    const float* xp = j > 0 ? s.x.data() + (j - 1) * n * kLanes : x0;
    const float* ej = s.decay.data() + j * n * kLanes;
    float* dBt = s.dB_lanes.data() + t * n * kLanes;
    float* dCt = s.dC_lanes.data() + t * n * kLanes;
    auto update = [&](int64_t i, float* hB, float* dec) VLAB_INLINE_LAMBDA {
      const float bi = Bt[i], ci = Ct[i];
      const int64_t o = i * kLanes;
#pragma omp simd
      for (int64_t w = 0; w < kLanes; ++w) {
        const float h = acc.h[o + w] + dy[w] * ci;
        dCt[o + w] += dy[w] * xj[o + w];
        dBt[o + w] += h * du[w];
        hB[w] += h * bi;
        const float wgt = h * xp[o + w] * ej[o + w];  // dL/d(delta_t * A_i)
        dec[w] += wgt * prm.a[o + w];
        acc.dA[o + w] += wgt * dt[w];
        acc.h[o + w] = h * ej[o + w];
      }
    };
    for (int64_t i = 0; i + 1 < ns; i += 2) {
      update(i, sum_hB[0], sum_decay[0]);
      update(i + 1, sum_hB[1], sum_decay[1]);
    }
    if (ns % 2) {
      update(ns - 1, sum_hB[0], sum_decay[0]);
    }
    const float* raw = s.delta.data() + j * kLanes;
    float* du_out = s.du.data() + j * kLanes;
    float* ddelta_out = s.ddelta.data() + j * kLanes;
#pragma omp simd
    for (int64_t w = 0; w < kLanes; ++w) {
      const float hB = sum_hB[0][w] + sum_hB[1][w];
      du_out[w] = dy[w] * prm.d_skip[w] + dt[w] * hB;
      float ddt = ut[w] * hB + sum_decay[0][w] + sum_decay[1][w];
      if (p.softplus) {
        const float x = raw[w] + prm.bias[w];
        ddt *= x > 20.0f ? 1.0f : vsigmoid(x);
      }
      ddelta_out[w] = ddt;
      acc.dbias[w] += ddt;
    }
  }
}

// Backward of one block: chunk tiles last to first, then the block's parameter-gradient rows.
template <int kState>
VLAB_INLINE void backward_block(const Problem& p, const Grads& g, int64_t b, int64_t block,
                                BlockParams& prm, BlockAcc& acc, Scratch& s) {
  const int64_t n = kState > 0 ? kState : p.dstate;
  const Tile first = tile_of(p, b, block, 0);
  prm.load(p, first.d0, first.lanes, n);
  std::fill(acc.h, acc.h + n * kLanes, 0.0f);
  std::fill(acc.dA, acc.dA + n * kLanes, 0.0f);
  for (int64_t w = 0; w < kLanes; ++w) {
    for (int64_t i = 0; g.dlast && w < first.lanes && i < n; ++i) {
      acc.h[i * kLanes + w] = g.dlast[(b * p.dim + first.d0 + w) * n + i];
    }
    acc.dD[w] = 0.0f;
    acc.dbias[w] = 0.0f;
  }
  for (int64_t c = p.len > 0 ? p.n_chunks - 1 : -1; c >= 0; --c) {
    const Tile r = tile_of(p, b, block, c);
    const float* x0 = g.checkpoints + p.checkpoint(b, block, c);
    load_tile(p.u, r, s.u.data());
    load_tile(p.delta, r, s.delta.data());
    load_tile(g.dout, r, s.dout.data());
    if (p.z.ptr) {
      load_tile(p.z, r, s.z.data());
    }
    recompute_chunk<kState>(p, prm, r, x0, s);
    reverse_chunk<kState>(p, prm, r, x0, s, acc);
    store_tile(s.du.data(), r, g.du);
    store_tile(s.ddelta.data(), r, g.ddelta);
    if (p.z.ptr) {
      store_tile(s.dz.data(), r, g.dz);
    }
  }
  for (int64_t w = 0; w < first.lanes; ++w) {
    const int64_t row = b * p.dim + first.d0 + w;
    for (int64_t i = 0; i < n; ++i) {
      g.dA_rows[row * n + i] = acc.dA[i * kLanes + w];
    }
    g.dD_rows[row] = acc.dD[w];
    g.dbias_rows[row] = acc.dbias[w];
  }
}

// (cells, kLanes) per-lane sums -> (cells,) totals.
VLAB_INLINE void sum_lanes(const float* lanes, int64_t cells, float* out) {
  for (int64_t c = 0; c < cells; ++c) {
    float total = 0.0f;
    for (int64_t w = 0; w < kLanes; ++w) {
      total += lanes[c * kLanes + w];
    }
    out[c] = total;
  }
}

// Backward for tasks [begin, end) of the (group, batch) grid: each task owns one batch entry
// and a contiguous range of blocks, so its dB / dC sums need no synchronisation.
template <int kState>
VLAB_CLONES void backward_tasks(const Problem& p, const Grads& g, int64_t begin, int64_t end) {
  const int64_t n = kState > 0 ? kState : p.dstate;
  Scratch s(p, n);
  auto prm = std::make_unique<BlockParams>();
  auto acc = std::make_unique<BlockAcc>();
  const int64_t per_group = (p.blocks + g.groups - 1) / g.groups;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t group = task / p.batch, b = task % p.batch;
    const int64_t block_end = std::min(p.blocks, (group + 1) * per_group);
    std::fill(s.dB_lanes.begin(), s.dB_lanes.end(), 0.0f);
    std::fill(s.dC_lanes.begin(), s.dC_lanes.end(), 0.0f);
    for (int64_t block = group * per_group; block < block_end; ++block) {
      backward_block<kState>(p, g, b, block, *prm, *acc, s);
    }
    const int64_t part = (group * p.batch + b) * p.len * n;
    sum_lanes(s.dB_lanes.data(), p.len * n, g.dB_parts + part);
    sum_lanes(s.dC_lanes.data(), p.len * n, g.dC_parts + part);
  }
}

// Sums `parts` consecutive blocks of `size` floats into `dst`.
void sum_blocks(const float* src, int64_t parts, int64_t size, float* dst) {
  std::fill(dst, dst + size, 0.0f);
  for (int64_t k = 0; k < parts; ++k) {
    const float* block = src + k * size;
    for (int64_t i = 0; i < size; ++i) {
      dst[i] += block[i];
    }
  }
}

at::Tensor summed(const float* src, int64_t parts, at::IntArrayRef shape,
                  const at::TensorOptions& opts) {
  at::Tensor out = at::empty(shape, opts);
  sum_blocks(src, parts, out.numel(), out.data_ptr<float>());
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool softplus, int64_t chunk,
    bool save_checkpoints) {
  const Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, softplus, chunk);
  const auto opts = u.options();
  // Channel-last, as HF's out_proj consumes it (through a transpose back).
  at::Tensor out = at::empty({p.batch, p.len, p.dim}, opts).transpose(1, 2);
  at::Tensor last = at::empty({p.batch, p.dim, p.dstate}, opts);
  at::Tensor ckpt = save_checkpoints
                        ? at::empty({p.batch, p.blocks, p.n_chunks, p.dstate, kLanes}, opts)
                        : at::empty({0}, opts);
  float* ckpt_ptr = save_checkpoints ? ckpt.data_ptr<float>() : nullptr;
  const Out out_view = strided<float>(out);
  dispatch_dstate(p.dstate, [&](auto state) {
    constexpr int kState = decltype(state)::value;
    at::parallel_for(0, p.batch * p.blocks, 1, [&](int64_t begin, int64_t end) {
      DenormalGuard guard;
      forward_blocks<kState>(p, begin, end, out_view, last.data_ptr<float>(), ckpt_ptr);
    });
  });
  return {out, last, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
scan_bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
         const at::Tensor& C, const std::optional<at::Tensor>& D,
         const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
         bool softplus, int64_t chunk, const at::Tensor& checkpoints, const at::Tensor& dout,
         const std::optional<at::Tensor>& dlast) {
  const Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, softplus, chunk);
  check_contiguous(checkpoints, "checkpoints", 5);
  TORCH_CHECK(checkpoints.size(0) == p.batch && checkpoints.size(1) == p.blocks &&
                  checkpoints.size(2) == p.n_chunks && checkpoints.size(3) == p.dstate,
              "checkpoints do not match the inputs and chunk");
  check_input(dout, "dout", 3);
  TORCH_CHECK(dout.sizes() == u.sizes(), "dout must have the shape of u");
  const int64_t threads = at::get_num_threads();
  const int64_t groups =
      std::clamp<int64_t>((4 * threads + p.batch - 1) / p.batch, 1, p.blocks);
  const auto opts = u.options();
  const at::Tensor unused = at::empty({0}, opts);
  at::Tensor du = empty_like_layout(u);
  at::Tensor ddelta = empty_like_layout(delta);
  at::Tensor dz = p.z.ptr ? empty_like_layout(*z) : unused;
  at::Tensor dA_rows = at::empty({p.batch, p.dim, p.dstate}, opts);
  at::Tensor dD_rows = at::empty({p.batch, p.dim}, opts);
  at::Tensor dbias_rows = at::empty({p.batch, p.dim}, opts);
  at::Tensor dB_parts = at::empty({groups, p.batch, p.len, p.dstate}, opts);
  at::Tensor dC_parts = at::empty({groups, p.batch, p.len, p.dstate}, opts);
  Grads g{};
  g.du = strided<float>(du);
  g.ddelta = strided<float>(ddelta);
  if (p.z.ptr) {
    g.dz = strided<float>(dz);
  }
  g.dout = strided<const float>(dout);
  g.dA_rows = dA_rows.data_ptr<float>();
  g.dD_rows = dD_rows.data_ptr<float>();
  g.dbias_rows = dbias_rows.data_ptr<float>();
  g.dB_parts = dB_parts.data_ptr<float>();
  g.dC_parts = dC_parts.data_ptr<float>();
  g.dlast = optional_ptr(dlast, "dlast", p.batch * p.dim * p.dstate);
  g.checkpoints = checkpoints.data_ptr<float>();
  g.groups = groups;
  dispatch_dstate(p.dstate, [&](auto state) {
    constexpr int kState = decltype(state)::value;
    at::parallel_for(0, groups * p.batch, 1, [&](int64_t begin, int64_t end) {
      DenormalGuard guard;
      backward_tasks<kState>(p, g, begin, end);
    });
  });
  const at::Tensor dA = summed(g.dA_rows, p.batch, {p.dim, p.dstate}, opts);
  const at::Tensor dD = p.D ? summed(g.dD_rows, p.batch, {p.dim}, opts) : unused;
  const at::Tensor dbias = p.delta_bias ? summed(g.dbias_rows, p.batch, {p.dim}, opts) : unused;
  const std::vector<int64_t> time_major{p.batch, p.len, p.dstate};
  const at::Tensor dB = groups == 1 ? dB_parts[0] : summed(g.dB_parts, groups, time_major, opts);
  const at::Tensor dC = groups == 1 ? dC_parts[0] : summed(g.dC_parts, groups, time_major, opts);
  return {du, ddelta, dA, dB.transpose(1, 2), dC.transpose(1, 2), dD, dz, dbias};
}

}  // namespace

TORCH_LIBRARY(vlab_selective_scan, m) {
  m.def(
      "fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool softplus, int chunk, bool save_checkpoints) "
      "-> (Tensor out, Tensor last_state, Tensor checkpoints)");
  m.def(
      "bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool softplus, int chunk, Tensor checkpoints, Tensor dout, "
      "Tensor? dlast) -> (Tensor du, Tensor ddelta, Tensor dA, Tensor dB, Tensor dC, "
      "Tensor dD, Tensor dz, Tensor ddelta_bias)");
}

TORCH_LIBRARY_IMPL(vlab_selective_scan, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
