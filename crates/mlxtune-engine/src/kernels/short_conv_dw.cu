// LFM2's gated short convolution, backward for the kernel weights, CUDA body: partial sums
//   dw[p, h, k] = sum over rows of chunk p of  dy[row, h] * C[row, h] * (B * x)[row - j, h]
// (j = L - 1 - k, same row and example); one thread per (chunk, h), chunks of ROWS rows;
// the caller sums over p. Template: T, L, ROWS. Output dw is float32 [P, H, L].
const int H = bcx_shape[2] / 3;
const int Tn = bcx_shape[1];
// 32-bit index arithmetic (the caller keeps B*T*3H below 2^31).
const int rows = bcx_shape[0] * Tn;
const int chunks = (rows + ROWS - 1) / ROWS;
const unsigned long long rank = cg::this_grid().thread_rank();
if (rank >= (unsigned long long)chunks * H) return;
const int idx = (int)rank;
const int h = idx % H;
const int p = idx / H;
float acc[L];
#pragma unroll
for (int k = 0; k < L; ++k) acc[k] = 0.0f;
const int end = min(rows, (p + 1) * ROWS);
for (int row = p * ROWS; row < end; ++row) {
  const int t = row % Tn;
  const int sg = seg[row];
  const float dout = static_cast<float>(dy[row * H + h]) *
      static_cast<float>(bcx[row * 3 * H + H + h]);
#pragma unroll
  for (int k = 0; k < L; ++k) {
    const int j = L - 1 - k;
    if (t - j >= 0 && seg[row - j] == sg) {
      const T* r = bcx + (row - j) * 3 * H;
      acc[k] += dout * static_cast<float>(r[h]) * static_cast<float>(r[2 * H + h]);
    }
  }
}
#pragma unroll
for (int k = 0; k < L; ++k) dw[(p * H + h) * L + k] = acc[k];
