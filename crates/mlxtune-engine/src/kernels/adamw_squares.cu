// Σ (s / denom)^2 of one array per block (denom = h[10]), written to sq[array]: a strided
// sum per thread, then the block's sum through warp shuffles. One block per array keeps
// the order of additions fixed, so the norm is the same from run to run.
// Generated signature: const float* s0 … s{g-1}, const float* h, const int* sizes,
// float* sq; the lines before this one pick `s` and `n` for blockIdx.y (adamw_group.rs).
const float d = h[10];
float acc = 0.0f;
for (long long i = threadIdx.x; i < n; i += blockDim.x) {
  const float x = s[i] / d;
  acc += x * x;
}
for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
__shared__ float part[32];
if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
__syncthreads();
if (threadIdx.x < 32) {
  acc = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if (threadIdx.x == 0) sq[blockIdx.y] = acc;
}
