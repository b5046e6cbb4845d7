// Σ (s / denom)^2 of one array per row of blocks (denom = h[10]): the blocks at x
// positions 0 … gridDim.x-1 of row y each sum a fixed stride of array y and write their
// part to sq[y * gridDim.x + x]: a strided sum per thread, then the block's sum through
// warp shuffles. The split depends only on the launch, so the norm is the same from run
// to run; many blocks per array keep large arrays (full fine-tuning) at memory speed.
// Generated signature: const G* s0 … s{g-1} (G: the gradients' dtype, f32 or 16-bit),
// const float* h, const int* sizes, float* sq; the lines before this one pick `s` and `n`
// for blockIdx.y (adamw_group.rs).
const float d = h[10];
float acc = 0.0f;
const long long stride = (long long)gridDim.x * blockDim.x;
for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
  const float x = static_cast<float>(s[i]) / d;
  acc += x * x;
}
for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
__shared__ float part[32];
if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
__syncthreads();
if (threadIdx.x < 32) {
  acc = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if (threadIdx.x == 0) sq[(long long)blockIdx.y * gridDim.x + blockIdx.x] = acc;
}
