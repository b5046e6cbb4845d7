// LFM2's gated short convolution, backward for bcx, CUDA body. One thread per (row, h):
// with dout = dy * C and bx = B * x,
//   dC[row]   = dy[row] * conv(bx)[row]
//   dbx[row]  = sum_k w[h, k] * dout[row + j]   (j = L - 1 - k, same row and example)
//   dB[row]   = dbx * x[row],   dx[row] = dbx * B[row]
// written into dbcx [B, T, 3H] in bcx's layout. Template: T, L.
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
float conv = 0.0f, dbx = 0.0f;
#pragma unroll
for (int k = 0; k < L; ++k) {
  const int j = L - 1 - k;
  const float wk = static_cast<float>(w[h * L + k]);
  if (t - j >= 0 && seg[row - j] == sg) {
    const T* r = bcx + (row - j) * 3 * H;
    conv += wk * static_cast<float>(r[h]) * static_cast<float>(r[2 * H + h]);
  }
  if (t + j < Tn && seg[row + j] == sg) {
    const float c = static_cast<float>(bcx[(row + j) * 3 * H + H + h]);
    dbx += wk * static_cast<float>(dy[(row + j) * H + h]) * c;
  }
}
const T* r = bcx + row * 3 * H;
T* out = dbcx + row * 3 * H;
out[h] = static_cast<T>(dbx * static_cast<float>(r[2 * H + h]));
out[H + h] = static_cast<T>(static_cast<float>(dy[idx]) * conv);
out[2 * H + h] = static_cast<T>(dbx * static_cast<float>(r[h]));
