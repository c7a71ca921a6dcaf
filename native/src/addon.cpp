// m1cuda: the Node-API side of the CUDA backend.
//
// JavaScript sees device buffers as plain numbers (device addresses; CUDA keeps them below 2^53)
// handed out by a caching allocator, and runs ops by name through `call(op, args)`, where `args` is a
// Float64Array of pointers, sizes and scalars in the order each op's entry below reads them. One
// table keeps the binding surface small: the shape checks live in TypeScript (src/backend/cuda/),
// which mirrors the CPU backend's validation before anything reaches this file.
//
// All work goes to one non-blocking stream, so a buffer freed while kernels that use it are still
// queued can be handed out again at once: the next user's work is ordered after them.
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "decode_attention.h"
#include "kernels.h"
#include "runtime.h"
#include "sampling.h"

namespace {

// ---------------------------------------------------------------------------------------------
// caching allocator: size buckets (4 per power of two above 4 KiB) with free lists, in pools.
//
// Pool 0 serves ordinary work. A CUDA graph capture gets a private pool: the graph's kernels read
// and write its blocks at the addresses they had during capture on every replay, so those blocks
// must not be handed to anyone else while the graph exists (blocks freed during capture go back to
// the private free lists and are reused only by later ops of the same capture, which the graph runs
// in the same order). When the graph is destroyed its pool dies: cached blocks move to pool 0, and
// blocks still live (the graph's outputs) join pool 0 when they are freed.

struct Pool {
  std::unordered_map<size_t, std::vector<void*>> freeLists;  // bucket bytes → cached blocks
  bool dead = false;
};
struct Block {
  size_t bytes;
  int pool;
};

struct Allocator {
  std::unordered_map<int, Pool> pools{{0, Pool{}}};
  int active = 0;                                             // the pool new blocks come from
  std::unordered_map<void*, Block> live;                      // block → bucket bytes, pool
  size_t liveBytes = 0, cachedBytes = 0, mallocCalls = 0;
  // high-water marks since the last resetPeak(): live = handed out to tensors, reserved = live + cached
  // (what the process holds from the driver)
  size_t peakLiveBytes = 0, peakReservedBytes = 0;

  static size_t bucket(size_t n) {
    if (n <= 4096) return n <= 256 ? 256 : (n + 255) / 256 * 256;
    // large blocks (KV caches, state pools, weights): 2 MiB granularity; quarter-power-of-two
    // buckets would waste up to 25 % of a 2 GB cache layer
    if (n > (64u << 20)) return (n + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    size_t p = 4096;
    while (p * 2 < n) p *= 2;  // p < n ≤ 2p: steps of p/4
    size_t step = p / 4;
    return (n + step - 1) / step * step;
  }

  void* alloc(size_t n) {
    size_t b = bucket(n);
    auto& fl = pools[active].freeLists[b];
    void* p = nullptr;
    // a capture without a free block of its own takes one of pool 0's: nothing live uses it, and the graph's
    // replays run after the work that freed it (one stream); from now on the block belongs to the graph's pool
    auto* from = !fl.empty() ? &fl : nullptr;
    if (!from && active != 0) {
      auto& f0 = pools[0].freeLists[b];
      if (!f0.empty()) from = &f0;
    }
    if (from) {
      p = from->back();
      from->pop_back();
      cachedBytes -= b;
    } else {
      cudaError_t e = cudaMalloc(&p, b);
      // (during a capture the retry is not possible: emptyCache synchronises the stream)
      if (e == cudaErrorMemoryAllocation && active == 0) {
        (void)cudaGetLastError();
        emptyCache();  // give the cached blocks back to the driver and try once more
        e = cudaMalloc(&p, b);
      }
      // a failure stays the thread's "last error": clear it, or the next kernel's launch check
      // (cudaGetLastError) reports this out-of-memory as its own
      if (e != cudaSuccess) (void)cudaGetLastError();
      m1Check(e, ("cudaMalloc(" + std::to_string(b) + " bytes)").c_str());
      mallocCalls++;
      if ((uintptr_t)p >= (1ull << 53)) throw std::runtime_error("device address above 2^53 cannot be passed to JavaScript");
    }
    live[p] = {b, active};
    liveBytes += b;
    if (liveBytes > peakLiveBytes) peakLiveBytes = liveBytes;
    if (liveBytes + cachedBytes > peakReservedBytes) peakReservedBytes = liveBytes + cachedBytes;
    return p;
  }

  void release(void* p) {
    auto it = live.find(p);
    if (it == live.end()) throw std::runtime_error("free of a device pointer that the allocator does not own");
    Block blk = it->second;
    live.erase(it);
    liveBytes -= blk.bytes;
    auto pit = pools.find(blk.pool);
    Pool& pool = (pit == pools.end() || pit->second.dead) ? pools[0] : pit->second;
    pool.freeLists[blk.bytes].push_back(p);
    cachedBytes += blk.bytes;
  }

  int newPool() {
    static int next = 1;
    pools[next] = Pool{};
    return next++;
  }
  /** a graph's pool dies: its cached blocks go to pool 0 (stream order keeps reuse safe) */
  void killPool(int id) {
    auto it = pools.find(id);
    if (id == 0 || it == pools.end()) return;
    for (auto& kv : it->second.freeLists)
      for (void* p : kv.second) pools[0].freeLists[kv.first].push_back(p);
    pools.erase(it);
  }

  void emptyCache() {
    m1Check(cudaStreamSynchronize(m1Stream()), "emptyCache");
    for (auto& kv : pools[0].freeLists)
      for (void* p : kv.second) {
        cudaFree(p);
        cachedBytes -= kv.first;
      }
    pools[0].freeLists.clear();
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator();
  return *a;
}

// ---------------------------------------------------------------------------------------------
// argument unpacking for `call`

struct Args {
  const double* v;
  size_t n;
  std::string op;
  double at(size_t i) const {
    if (i >= n) throw std::runtime_error(op + ": missing argument " + std::to_string(i));
    return v[i];
  }
  template <typename T = void>
  T* p(size_t i) const { return reinterpret_cast<T*>((uintptr_t)at(i)); }
  int64_t i64(size_t i) const { return (int64_t)at(i); }
  int i32(size_t i) const { return (int)at(i); }
  float f(size_t i) const { return (float)at(i); }
};

void check(cudaError_t e, const std::string& op) { m1Check(e, op.c_str()); }

using OpFn = std::function<double(const Args&)>;

std::unordered_map<std::string, OpFn>& ops() {
  static std::unordered_map<std::string, OpFn> t;
  if (!t.empty()) return t;
  cudaStream_t (*S)() = m1Stream;
  auto def = [&](const char* name, OpFn fn) { t.emplace(name, std::move(fn)); };

  def("cast_f32_bf16", [S](const Args& a) { check(m1_cast_f32_bf16(a.p(0), a.p<float>(1), a.i64(2), S()), a.op); return 0.0; });
  def("cast_bf16_f32", [S](const Args& a) { check(m1_cast_bf16_f32(a.p<float>(0), a.p(1), a.i64(2), S()), a.op); return 0.0; });
  def("fill_f32", [S](const Args& a) { check(m1_fill_f32(a.p<float>(0), a.f(1), a.i64(2), S()), a.op); return 0.0; });
  def("fill_bf16", [S](const Args& a) { check(m1_fill_bf16(a.p(0), a.f(1), a.i64(2), S()), a.op); return 0.0; });
  def("add", [S](const Args& a) { check(m1_add(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.i64(3), S()), a.op); return 0.0; });
  def("axpy", [S](const Args& a) { check(m1_axpy(a.p<float>(0), a.p<float>(1), a.f(2), a.i64(3), S()), a.op); return 0.0; });
  def("scale", [S](const Args& a) { check(m1_scale(a.p<float>(0), a.f(1), a.i64(2), S()), a.op); return 0.0; });
  def("mul", [S](const Args& a) { check(m1_mul(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.i64(3), S()), a.op); return 0.0; });
  def("neg_exp", [S](const Args& a) { check(m1_neg_exp(a.p<float>(0), a.p<float>(1), a.i64(2), S()), a.op); return 0.0; });
  def("add_bias", [S](const Args& a) {
    check(m1_add_bias(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.i64(3), a.i64(4), S()), a.op);
    return 0.0;
  });
  def("sum_rows", [S](const Args& a) { check(m1_sum_rows(a.p<float>(0), a.p<float>(1), a.i64(2), a.i64(3), S()), a.op); return 0.0; });
  def("sum_squares_each_partials", [](const Args&) { return (double)m1_sum_squares_each_partials(); });
  def("sum_squares_each", [S](const Args& a) {
    // out (nT doubles), partials (nT · sum_squares_each_partials doubles), nT, then (pointer, size, bf16) per tensor
    const int nT = a.i32(2);
    std::vector<const void*> xs(nT);
    std::vector<int64_t> sizes(nT);
    std::vector<int> bf16(nT);
    for (int t = 0; t < nT; t++) {
      xs[t] = a.p(3 + 3 * t);
      sizes[t] = a.i64(4 + 3 * t);
      bf16[t] = a.i32(5 + 3 * t);
    }
    check(m1_sum_squares_each(a.p<double>(0), a.p<double>(1), xs.data(), sizes.data(), bf16.data(), nT, S()), a.op);
    return 0.0;
  });
  def("copy_cols_bf16", [S](const Args& a) {
    check(m1_copy_cols_bf16(a.p(0), a.i64(1), a.i64(2), a.p<float>(3), a.i64(4), a.i64(5), a.i64(6), a.i64(7), S()), a.op);
    return 0.0;
  });
  def("copy_cols", [S](const Args& a) {
    check(m1_copy_cols(a.p(0), a.i64(1), a.i64(2), a.p(3), a.i64(4), a.i64(5), a.i64(6), a.i64(7), a.i32(8), S()), a.op);
    return 0.0;
  });
  def("repeat_groups", [S](const Args& a) {
    check(m1_repeat_groups(a.p<float>(0), a.p<float>(1), a.i64(2), a.i64(3), a.i64(4), a.i64(5), S()), a.op);
    return 0.0;
  });
  def("repeat_groups_bwd", [S](const Args& a) {
    check(m1_repeat_groups_bwd(a.p<float>(0), a.p<float>(1), a.i64(2), a.i64(3), a.i64(4), a.i64(5), S()), a.op);
    return 0.0;
  });
  def("matmul", [](const Args& a) {
    // a, aBf16, aRows, aCols, transA, b, bBf16, bRows, bCols, transB, c, cBf16, accumulate, f32Precision
    m1Matmul(a.p(0), a.i32(1) != 0, a.i64(2), a.i64(3), a.i32(4) != 0, a.p(5), a.i32(6) != 0, a.i64(7), a.i64(8), a.i32(9) != 0,
             a.p(10), a.i32(11) != 0, a.i32(12) != 0, a.i32(13));
    return 0.0;
  });
  def("matmul_pair", [](const Args& a) {
    // a, aBf16, aRows, aCols, b1, b2, bBf16, bRows, bCols, c, cBf16, f32Precision → 1 when done as one launch, else 0
    return m1MatmulPair(a.p(0), a.i32(1) != 0, a.i64(2), a.i64(3), a.p(4), a.p(5), a.i32(6) != 0, a.i64(7), a.i64(8), a.p(9),
                        a.i32(10) != 0, a.i32(11)) ? 1.0 : 0.0;
  });
  def("embedding", [S](const Args& a) {
    check(m1_embedding(a.p<float>(0), a.p(1), a.i32(2), a.p<int>(3), a.i64(4), a.i64(5), S()), a.op);
    return 0.0;
  });
  def("embedding_bwd", [S](const Args& a) {
    check(m1_embedding_bwd(a.p<float>(0), a.p<int>(1), a.p<float>(2), a.i64(3), a.i64(4), S()), a.op);
    return 0.0;
  });
  def("rmsnorm_bwd", [S](const Args& a) {
    check(m1_rmsnorm_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6), a.i64(7),
                         a.i64(8), S()),
          a.op);
    return 0.0;
  });
  def("swiglu", [S](const Args& a) { check(m1_swiglu(a.p(0), a.i32(1), a.p(2), a.p(3), a.i32(4), a.i64(5), S()), a.op); return 0.0; });
  def("add_rmsnorm", [S](const Args& a) {
    check(m1_add_rmsnorm(a.p<float>(0), a.p(1), a.i32(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p(6), a.i32(7), a.i64(8), a.i64(9),
                         a.f(10), S()),
          a.op);
    return 0.0;
  });
  def("swiglu_bwd", [S](const Args& a) {
    check(m1_swiglu_bwd(a.p(0), a.p(1), a.i32(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.i64(6), S()), a.op);
    return 0.0;
  });
  def("rope", [S](const Args& a) {
    check(m1_rope(a.p<float>(0), a.p<float>(1), a.p<int>(2), a.p<float>(3), a.i64(4), a.i64(5), a.i64(6), a.i32(7), S()), a.op);
    return 0.0;
  });
  def("attention", [S](const Args& a) {
    check(m1_attention(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<int>(5), a.i32(6), a.i32(7),
                       a.i32(8), a.i32(9), a.i32(10), a.f(11), a.i32(12), S()),
          a.op);
    return 0.0;
  });
  def("attention_bwd", [S](const Args& a) {
    check(m1_attention_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6),
                           a.p<float>(7), a.p<float>(8), a.p<float>(9), a.p<int>(10), a.i32(11), a.i32(12), a.i32(13), a.i32(14),
                           a.i32(15), a.f(16), a.i32(17), S()),
          a.op);
    return 0.0;
  });
  def("kv_cache_write", [S](const Args& a) {
    check(m1_kv_cache_write(a.p(0), a.p(1), a.i32(2), a.p<float>(3), a.p<float>(4), a.p<int>(5), a.i64(6), a.i64(7), S()), a.op);
    return 0.0;
  });
  // (out, q, kCache, vCache, cacheBf16, blockTables, maxBlocks, seqLens, n, Hq, Hkv, Dh, blockSize, scale, maxSeqLen)
  def("paged_decode", [S](const Args& a) {
    const int n = a.i32(8), Hq = a.i32(9), Hkv = a.i32(10), Dh = a.i32(11), bf16 = a.i32(4), maxSeqLen = a.i32(14);
    // split-K partials: scratch from the caching allocator, handed back at once (stream-ordered reuse)
    const size_t bytes = m1_decode_attention_scratch_bytes(n, Hq, Hkv, Dh, bf16, maxSeqLen);
    void* scratch = bytes ? m1Alloc(bytes) : nullptr;
    cudaError_t e = m1_decode_attention(a.p<float>(0), scratch, a.p<float>(1), a.p(2), a.p(3), bf16, a.p<int>(5), a.i32(6), a.p<int>(7),
                                        maxSeqLen, n, Hq, Hkv, Dh, a.i32(12), a.f(13), S());
    if (scratch) m1Free(scratch);
    check(e, a.op);
    return 0.0;
  });
  def("conv1d", [S](const Args& a) {
    check(m1_conv1d(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<int>(4), a.i32(5), a.i32(6), a.i32(7), a.i32(8),
                    a.i32(9), S()),
          a.op);
    return 0.0;
  });
  def("conv1d_state_out", [S](const Args& a) {
    check(m1_conv1d_state_out(a.p<float>(0), a.p<float>(1), a.p<int>(2), a.p<int>(3), a.i32(4), a.i32(5), a.i32(6), a.i32(7), S()),
          a.op);
    return 0.0;
  });
  def("conv1d_step", [S](const Args& a) {
    check(m1_conv1d_step(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<int>(3), a.p<float>(4), a.p<float>(5), a.i32(6), a.i32(7),
                         a.i32(8), a.i32(9), S()),
          a.op);
    return 0.0;
  });
  def("conv1d_bwd", [S](const Args& a) {
    check(m1_conv1d_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6),
                        a.p<int>(7), a.i32(8), a.i32(9), a.i32(10), a.i32(11), a.i32(12), S()),
          a.op);
    return 0.0;
  });
  def("selective_scan", [S](const Args& a) {
    check(m1_selective_scan(a.p(0), a.i32(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6), a.p<float>(7),
                            a.p<float>(8), a.p<float>(9), a.p<int>(10), a.p<float>(11), a.p<int>(12), a.p<float>(13), a.p<float>(14),
                            a.i32(15), a.i32(16), a.i32(17), a.i32(18), a.i32(19), S()),
          a.op);
    return 0.0;
  });
  def("mamba1_decode_step_handles", [](const Args& a) {
    const void* ptrs[] = {a.p(4), a.p(5), a.p(6)};
    return (double)m1_mamba1_decode_step_handles(a.i32(0), a.i32(1), a.i32(2), a.i32(3), ptrs, 3);
  });
  def("mamba1_decode_step", [S](const Args& a) {
    // y, outBf16, proj, projBf16, deltaLow, dtBias, convSt, convW, convBias, aLog, D, wBf16, ssmSt, stBf16, slots, nTok, Di, dXb, N, P, K
    check(m1_mamba1_decode_step(a.p(0), a.i32(1), a.p(2), a.i32(3), a.p<float>(4), a.p(5), a.p(6), a.p(7), a.p(8), a.p<float>(9),
                                a.p(10), a.i32(11), a.p(12), a.i32(13), a.p<int>(14), a.i32(15), a.i32(16), a.i32(17), a.i32(18),
                                a.i32(19), a.i32(20), S()),
          a.op);
    return 0.0;
  });
  def("selective_scan_step", [S](const Args& a) {
    check(m1_selective_scan_step(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5),
                                 a.p<float>(6), a.p<float>(7), a.p<float>(8), a.p<float>(9), a.p<int>(10), a.i32(11), a.i32(12),
                                 a.i32(13), a.i32(14), S()),
          a.op);
    return 0.0;
  });
  def("selective_scan_scratch_floats", [](const Args& a) {
    return (double)m1_selective_scan_scratch_floats(a.i32(0), a.i32(1), a.i32(2), a.i32(3));
  });
  def("selective_scan_checkpoint_floats", [](const Args& a) {
    return (double)m1_selective_scan_checkpoint_floats(a.i32(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4));
  });
  def("selective_scan_bwd_scratch_floats", [](const Args& a) {
    return (double)m1_selective_scan_bwd_scratch_floats(a.i32(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4));
  });
  def("scan_bwd_scratch_floats", [](const Args& a) { return (double)m1_scan_bwd_scratch_floats(a.i64(0), a.i32(1), a.i32(2)); });
  def("selective_scan_bwd", [S](const Args& a) {
    check(m1_selective_scan_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5),
                                a.p<float>(6), a.p<float>(7), a.p<float>(8), a.p<float>(9), a.p<float>(10), a.p<float>(11),
                                a.p<float>(12), a.p<float>(13), a.p<float>(14), a.p<float>(15), a.p<float>(16), a.p<float>(17),
                                a.p<int>(18), a.p<float>(19), a.i32(20), a.i32(21), a.i32(22), a.i32(23), a.i32(24), S()),
          a.op);
    return 0.0;
  });
  def("ssd_scan", [S](const Args& a) {
    check(m1_ssd_scan(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6),
                      a.p<float>(7), a.p<int>(8), a.p<float>(9), a.p<int>(10), a.i32(11), a.i32(12), a.i32(13), a.i32(14), a.i32(15),
                      a.i32(16), S()),
          a.op);
    return 0.0;
  });
  def("ssd_scan_step", [S](const Args& a) {
    check(m1_ssd_scan_step(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6),
                           a.p<float>(7), a.p<float>(8), a.p<int>(9), a.i32(10), a.i32(11), a.i32(12), a.i32(13), a.i32(14), S()),
          a.op);
    return 0.0;
  });
  def("ssd_scan_bwd", [S](const Args& a) {
    check(m1_ssd_scan_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6),
                          a.p<float>(7), a.p<float>(8), a.p<float>(9), a.p<float>(10), a.p<float>(11), a.p<float>(12), a.p<float>(13),
                          a.p<float>(14), a.p<float>(15), a.p<int>(16), a.i32(17), a.i32(18), a.i32(19), a.i32(20), a.i32(21),
                          a.i32(22), S()),
          a.op);
    return 0.0;
  });
  def("gated_rmsnorm", [S](const Args& a) {
    check(m1_gated_rmsnorm(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.i64(4), a.i64(5), a.i64(6), a.f(7), S()),
          a.op);
    return 0.0;
  });
  def("gated_rmsnorm_bwd", [S](const Args& a) {
    check(m1_gated_rmsnorm_bwd(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5),
                               a.p<float>(6), a.p<float>(7), a.i64(8), a.i64(9), a.i64(10), a.f(11), S()),
          a.op);
    return 0.0;
  });
  def("log_softmax", [S](const Args& a) {
    check(m1_log_softmax(a.p<float>(0), a.p<float>(1), a.i64(2), a.i64(3), S()), a.op);
    return 0.0;
  });
  def("argmax_scratch_bytes", [](const Args& a) { return (double)m1_argmax_scratch_bytes(a.i64(0), a.i64(1)); });
  def("argmax_rows", [S](const Args& a) {
    check(m1_argmax_rows(a.p<int>(0), a.p<float>(1), a.p<float>(2), a.i64(3), a.i64(4), a.p(5), S()), a.op);
    return 0.0;
  });
  def("gather_logprobs", [S](const Args& a) {
    check(m1_gather_logprobs(a.p<float>(0), a.p<float>(1), a.p<int>(2), a.i64(3), a.i64(4), S()), a.op);
    return 0.0;
  });
  // (ids, logprobs, x, params [n, 6] f64, n, V) → the sorted path's capacity; ids[i] = −1: sample row i on the host
  def("sample_rows", [S](const Args& a) {
    const int64_t n = a.i64(4);
    // per-row plans: scratch from the caching allocator, handed back at once (stream-ordered reuse)
    void* scratch = m1Alloc(m1_sample_rows_scratch_bytes(n));
    cudaError_t e = m1_sample_rows(a.p<int>(0), a.p<float>(1), scratch, a.p<float>(2), a.p<double>(3), n, a.i64(5), S());
    m1Free(scratch);
    check(e, a.op);
    return (double)m1_sample_rows_capacity();
  });
  def("cross_entropy", [S](const Args& a) {
    check(m1_cross_entropy(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<int>(3), a.p<int>(4), a.i64(5), a.i64(6), a.f(7), S()),
          a.op);
    return 0.0;
  });
  // (stats, x, other, targets, rows, Vc, scale, vocabOffset); other / targets may be 0
  def("softmax_chunk_stats", [S](const Args& a) {
    check(m1_softmax_chunk_stats(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<int>(3), a.i64(4), a.i64(5), a.f(6), a.i64(7), S()),
          a.op);
    return 0.0;
  });
  // (dl, x, coefs, other, targets, rows, Vc, scale, vocabOffset); other / targets may be 0
  def("softmax_chunk_grad", [S](const Args& a) {
    check(m1_softmax_chunk_grad(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<int>(4), a.i64(5), a.i64(6), a.f(7),
                                a.i64(8), S()),
          a.op);
    return 0.0;
  });
  def("adamw", [S](const Args& a) {
    check(m1_adamw(a.p<float>(0), a.p(1), a.i32(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.i64(6), a.f(7), a.f(8), a.f(9),
                   a.f(10), a.f(11), a.f(12), a.p<float>(13), S()),
          a.op);
    return 0.0;
  });
  return t;
}

// ---------------------------------------------------------------------------------------------
// Node-API functions

template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("m1cuda: ") + e.what());
  }
}

struct Graphs {
  struct Entry {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    int pool = 0;
  };
  std::unordered_map<int, Entry> entries;
  int capturing = 0;  // the pool (and graph id) being captured; 0: none
};
Graphs& graphs() {
  static Graphs* g = new Graphs();
  return *g;
}
void refuseDuringCapture(const char* what) {
  if (graphs().capturing)
    throw std::runtime_error(std::string(what) + " during a CUDA graph capture: a graph cannot record host transfers or waits " +
                             "(upload the step's inputs before the capture, read results after the replay)");
}

uintptr_t ptrArg(const Napi::CallbackInfo& info, size_t i) {
  return (uintptr_t)info[i].As<Napi::Number>().DoubleValue();
}

/** bytes of a TypedArray argument */
std::pair<void*, size_t> bytesOf(const Napi::Value& v) {
  auto ta = v.As<Napi::TypedArray>();
  auto buf = ta.ArrayBuffer();
  return {static_cast<uint8_t*>(buf.Data()) + ta.ByteOffset(), ta.ByteLength()};
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    int count = 0, driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    m1Check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    cudaDeviceProp prop{};
    m1Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    size_t freeB = 0, totalB = 0;
    m1Check(cudaMemGetInfo(&freeB, &totalB), "cudaMemGetInfo");
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", prop.name);
    o.Set("deviceCount", count);
    o.Set("computeCapability", std::to_string(prop.major) + "." + std::to_string(prop.minor));
    o.Set("totalMemoryBytes", (double)totalB);
    o.Set("freeMemoryBytes", (double)freeB);
    o.Set("multiprocessors", prop.multiProcessorCount);
    o.Set("driverVersion", driver);
    o.Set("runtimeVersion", runtime);
    return o;
  });
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    double bytes = info[0].As<Napi::Number>().DoubleValue();
    return Napi::Number::New(info.Env(), (double)(uintptr_t)allocator().alloc((size_t)bytes));
  });
}
Napi::Value Free(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    allocator().release((void*)ptrArg(info, 0));
    return info.Env().Undefined();
  });
}
/**
 * Pinned staging for small uploads. A cudaMemcpyAsync from pageable (JS) memory makes the driver
 * stage the bytes itself and may block until the stream has drained, so the host stops issuing ops
 * ahead of the GPU. Small arrays (index tables, ≤ kMaxUpload) are instead memcpy'd into a pinned
 * ring and queued from there, which returns at once.
 *
 * Invariant: a ring region is overwritten only after the copy that reads it has run. Regions are
 * handed out in ring order from `head` (wrapping to 0 when the tail is too short, the skipped tail
 * counted as taken), and each copy is followed by an event. So the pending copies, oldest first,
 * lie in ring order starting at `head`: those a new region overlaps are a prefix of `pending`, and
 * waiting on their events (in order) frees the region. The wait only happens when the host is a
 * whole ring (8 MiB of uploads) ahead of the GPU.
 */
struct UploadRing {
  static constexpr size_t kBytes = 8u << 20, kMaxUpload = 1u << 20, kAlign = 256;
  static constexpr size_t kMaxPending = 4096;  // bounds the events held when many tiny uploads are queued
  struct Pending {
    size_t begin, end;
    cudaEvent_t done;
  };
  uint8_t* base = nullptr;
  bool unavailable = false;  // cudaHostAlloc failed once: stay on the pageable path
  size_t head = 0;
  std::deque<Pending> pending;
  std::vector<cudaEvent_t> spare;

  bool ready() {
    if (!base && !unavailable) {
      void* p = nullptr;
      if (cudaHostAlloc(&p, kBytes, cudaHostAllocDefault) == cudaSuccess) base = static_cast<uint8_t*>(p);
      else {
        (void)cudaGetLastError();
        unavailable = true;
      }
    }
    return base != nullptr;
  }
  void retireFront() {
    m1Check(cudaEventSynchronize(pending.front().done), "upload: waiting for an earlier staged copy");
    spare.push_back(pending.front().done);
    pending.pop_front();
  }
  /** wait for the pending copies that read [b, e) */
  void retire(size_t b, size_t e) {
    while (!pending.empty() && pending.front().begin < e && b < pending.front().end) retireFront();
  }
  void upload(void* dst, const void* src, size_t n, cudaStream_t s) {
    const size_t need = (n + kAlign - 1) / kAlign * kAlign;
    if (head + need > kBytes) {
      retire(head, kBytes);
      head = 0;
    }
    retire(head, head + need);
    if (pending.size() >= kMaxPending) retireFront();
    std::memcpy(base + head, src, n);
    m1Check(cudaMemcpyAsync(dst, base + head, n, cudaMemcpyHostToDevice, s), "upload");
    cudaEvent_t ev;
    if (spare.empty()) m1Check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "upload: cudaEventCreate");
    else {
      ev = spare.back();
      spare.pop_back();
    }
    cudaError_t e = cudaEventRecord(ev, s);
    if (e != cudaSuccess) {
      spare.push_back(ev);
      m1Check(e, "upload: cudaEventRecord");
    }
    pending.push_back({head, head + need, ev});
    head += need;
  }
};

UploadRing& uploadRing() {
  static UploadRing* r = new UploadRing();
  return *r;
}

/** upload(ptr, typedArray): host → device; the source may be reused as soon as this returns */
Napi::Value Upload(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("upload");
    auto [data, n] = bytesOf(info[1]);
    void* dst = (void*)ptrArg(info, 0);
    UploadRing& ring = uploadRing();
    if (n && n <= UploadRing::kMaxUpload && ring.ready()) ring.upload(dst, data, n, m1Stream());
    else if (n) m1Check(cudaMemcpyAsync(dst, data, n, cudaMemcpyHostToDevice, m1Stream()), "upload");  // pageable: staged by the driver
    return info.Env().Undefined();
  });
}
/**
 * constant(typedArray) → ptr: a new device block holding the bytes, copied synchronously outside the
 * stream (so it may be made while a graph is being captured: small constant tables such as RoPE's
 * inverse frequencies). Freed with free() like any block; it then joins pool 0.
 */
Napi::Value Constant(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto [data, n] = bytesOf(info[0]);
    Allocator& al = allocator();
    const size_t b = Allocator::bucket(n ? n : 4);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, b);
    if (e != cudaSuccess) (void)cudaGetLastError();
    m1Check(e, "constant: cudaMalloc");
    al.mallocCalls++;
    e = cudaMemcpy(p, data, n, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      cudaFree(p);
      m1Check(e, "constant: cudaMemcpy");
    }
    al.live[p] = {b, 0};
    al.liveBytes += b;
    return Napi::Number::New(info.Env(), (double)(uintptr_t)p);
  });
}
/** download(ptr, typedArray): device → host, waits for all queued work */
Napi::Value Download(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("download");
    auto [data, n] = bytesOf(info[1]);
    if (n) m1Check(cudaMemcpyAsync(data, (const void*)ptrArg(info, 0), n, cudaMemcpyDeviceToHost, m1Stream()), "download");
    m1Check(cudaStreamSynchronize(m1Stream()), "download (a kernel queued earlier failed)");
    return info.Env().Undefined();
  });
}
/** copy(dst, src, bytes) device → device */
Napi::Value Copy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    double n = info[2].As<Napi::Number>().DoubleValue();
    if (n > 0)
      m1Check(cudaMemcpyAsync((void*)ptrArg(info, 0), (const void*)ptrArg(info, 1), (size_t)n, cudaMemcpyDeviceToDevice, m1Stream()),
              "copy");
    return info.Env().Undefined();
  });
}
Napi::Value Zero(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    double n = info[1].As<Napi::Number>().DoubleValue();
    if (n > 0) m1Check(cudaMemsetAsync((void*)ptrArg(info, 0), 0, (size_t)n, m1Stream()), "zero");
    return info.Env().Undefined();
  });
}
Napi::Value Sync(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("sync");
    m1Check(cudaStreamSynchronize(m1Stream()), "synchronize");
    return info.Env().Undefined();
  });
}
Napi::Value Call(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    std::string name = info[0].As<Napi::String>().Utf8Value();
    auto& table = ops();
    auto it = table.find(name);
    if (it == table.end()) throw std::runtime_error("unknown op '" + name + "'");
    auto arr = info[1].As<Napi::Float64Array>();
    Args a{arr.Data(), arr.ElementLength(), name};
    return Napi::Number::New(info.Env(), it->second(a));
  });
}
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  Allocator& al = allocator();
  o.Set("liveBytes", (double)al.liveBytes);
  o.Set("cachedBytes", (double)al.cachedBytes);
  o.Set("cudaMallocCalls", (double)al.mallocCalls);
  o.Set("peakLiveBytes", (double)al.peakLiveBytes);
  o.Set("peakReservedBytes", (double)al.peakReservedBytes);
  return o;
}
/** start new high-water marks from what is held now */
Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  Allocator& al = allocator();
  al.peakLiveBytes = al.liveBytes;
  al.peakReservedBytes = al.liveBytes + al.cachedBytes;
  return info.Env().Undefined();
}
Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("emptyCache");
    allocator().emptyCache();
    return info.Env().Undefined();
  });
}


// ---------------------------------------------------------------------------------------------
// CUDA graphs: record the stream's work once, replay it with one launch.
//
// graphBegin() starts capturing the stream into a new private allocator pool; every op called until
// graphEnd() is recorded, not run. The ops' arguments (device addresses, sizes, scalars) are baked
// into the graph, so whatever changes between replays must live in device buffers that the caller
// refills before each replay (its own uploads, outside the capture). Uploads, downloads and syncs
// during a capture are refused with an error, never silently recorded.

Napi::Value GraphBegin(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Graphs& g = graphs();
    if (g.capturing) throw std::runtime_error("graphBegin: a capture is already in progress");
    Allocator& al = allocator();
    // a capture cannot give cached blocks back to the driver when a cudaMalloc fails (that synchronises), so
    // it does so before it starts when less than an eighth of the device is free
    size_t freeB = 0, totalB = 0;
    if (al.cachedBytes > 0 && cudaMemGetInfo(&freeB, &totalB) == cudaSuccess && freeB < totalB / 8) al.emptyCache();
    (void)cudaGetLastError();
    int id = al.newPool();
    cudaError_t e = cudaStreamBeginCapture(m1Stream(), cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
      al.killPool(id);
      m1Check(e, "graphBegin: cudaStreamBeginCapture");
    }
    al.active = id;
    g.capturing = id;
    return Napi::Number::New(info.Env(), id);
  });
}
/** end the capture; abort = true discards it (an op failed while capturing) */
Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Graphs& g = graphs();
    if (!g.capturing) throw std::runtime_error("graphEnd: no capture in progress");
    const bool abort = info.Length() > 0 && info[0].ToBoolean().Value();
    Allocator& al = allocator();
    const int id = g.capturing;
    g.capturing = 0;
    al.active = 0;
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(m1Stream(), &graph);
    if (abort || e != cudaSuccess) {
      (void)cudaGetLastError();
      if (graph) cudaGraphDestroy(graph);
      al.killPool(id);
      if (abort) return info.Env().Undefined();
      m1Check(e, "graphEnd: cudaStreamEndCapture (an op in the capture was not capturable)");
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      cudaGraphDestroy(graph);
      al.killPool(id);
      m1Check(e, "graphEnd: cudaGraphInstantiate");
    }
    g.entries[id] = {graph, exec, id};
    return Napi::Number::New(info.Env(), id);
  });
}
Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("graphLaunch");
    auto it = graphs().entries.find(info[0].As<Napi::Number>().Int32Value());
    if (it == graphs().entries.end()) throw std::runtime_error("graphLaunch: no such graph (destroyed?)");
    m1Check(cudaGraphLaunch(it->second.exec, m1Stream()), "graphLaunch");
    return info.Env().Undefined();
  });
}
Napi::Value GraphDestroy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    refuseDuringCapture("graphDestroy");
    auto it = graphs().entries.find(info[0].As<Napi::Number>().Int32Value());
    if (it == graphs().entries.end()) return info.Env().Undefined();
    // replays still queued read the pool: wait for them before its blocks can go to other users
    m1Check(cudaStreamSynchronize(m1Stream()), "graphDestroy");
    cudaGraphExecDestroy(it->second.exec);
    cudaGraphDestroy(it->second.graph);
    allocator().killPool(it->second.pool);
    graphs().entries.erase(it);
    return info.Env().Undefined();
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("upload", Napi::Function::New(env, Upload));
  exports.Set("download", Napi::Function::New(env, Download));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("zero", Napi::Function::New(env, Zero));
  exports.Set("sync", Napi::Function::New(env, Sync));
  exports.Set("call", Napi::Function::New(env, Call));
  exports.Set("stats", Napi::Function::New(env, Stats));
  exports.Set("resetPeak", Napi::Function::New(env, ResetPeak));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  exports.Set("constant", Napi::Function::New(env, Constant));
  exports.Set("graphBegin", Napi::Function::New(env, GraphBegin));
  exports.Set("graphEnd", Napi::Function::New(env, GraphEnd));
  exports.Set("graphLaunch", Napi::Function::New(env, GraphLaunch));
  exports.Set("graphDestroy", Napi::Function::New(env, GraphDestroy));
  return exports;
}

}  // namespace

cudaStream_t m1Stream() {
  static cudaStream_t s = [] {
    cudaStream_t st;
    m1Check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    return st;
  }();
  return s;
}
void* m1Alloc(size_t bytes) { return allocator().alloc(bytes); }
void m1Free(void* p) { allocator().release(p); }

NODE_API_MODULE(m1cuda, Init)
