// LFM2's gated short convolution, forward, CUDA body. One thread per output element
// (row = b*T + t, channel h); bcx is the in_proj output [B, T, 3H] = (B | C | x):
//   y[row, h] = C[row, h] * sum_k w[h, k] * (B * x)[row - j, h],  j = L - 1 - k,
// over taps that stay in the row (t - j >= 0) and in the example (seg[row - j] == seg[row]).
// Template: T (dtype of bcx and y), L (kernel width). Accumulates in float.
const int H = bcx_shape[2] / 3;
const int Tn = bcx_shape[1];
// 32-bit index arithmetic (the caller keeps B*T*3H below 2^31).
const int total = bcx_shape[0] * Tn * H;
const unsigned long long rank = cg::this_grid().thread_rank();
if (rank >= (unsigned long long)total) return;
const int idx = (int)rank;
const int h = idx % H;
const int row = idx / H;
const int t = row % Tn;
const int sg = seg[row];
float acc = 0.0f;
#pragma unroll
for (int k = 0; k < L; ++k) {
  const int j = L - 1 - k;
  if (t - j >= 0 && seg[row - j] == sg) {
    const T* r = bcx + (row - j) * 3 * H;
    acc += static_cast<float>(w[h * L + k]) * static_cast<float>(r[h]) *
        static_cast<float>(r[2 * H + h]);
  }
}
y[idx] = static_cast<T>(static_cast<float>(bcx[row * 3 * H + H + h]) * acc);
