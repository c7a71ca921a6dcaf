// Token sampling on the device (Backend.sampleRows): temperature, top-k, top-p, min-p and greedy rows,
// giving the tokens of the host definition (RowSampler, src/backend/cpu/sampling.ts) for the same
// uniforms. Rows the kernels decline are marked and sampled on the host by the caller.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

extern "C" {

/** f64 values per output row in `params`: logitsRow, temperature, topP, topK, minP, uniform */
constexpr int kSampleParams = 6;

/** bytes of device scratch m1_sample_rows needs for n output rows */
size_t m1_sample_rows_scratch_bytes(int64_t n);

/**
 * Entries the sorted (filtered) path holds per row: a power of two ≤ 8192, from the device's opt-in
 * shared-memory limit. Rows whose filters keep more candidates than this are declined.
 */
int m1_sample_rows_capacity();

/**
 * For each output row i: logits row r = params[i·6] of x [R, V] (f32), sampled with
 * temperature / topP / topK / minP / uniform = params[i·6 + 1 .. 5] as RowSampler.sample does;
 * ids[i] = the token, logprobs[i] = x[r, id] − max − log Σ exp(x[r, ·] − max) (f64, stored as f32).
 * ids[i] = −1: the row was declined (more candidates than m1_sample_rows_capacity(), ties at the
 * top-k threshold beyond it, a nucleus past it, or a non-finite row); the caller samples it itself.
 * scratch: m1_sample_rows_scratch_bytes(n) bytes.
 */
cudaError_t m1_sample_rows(int* ids, float* logprobs, void* scratch, const float* x, const double* params, int64_t n, int64_t V,
                           cudaStream_t s);

}  // extern "C"
