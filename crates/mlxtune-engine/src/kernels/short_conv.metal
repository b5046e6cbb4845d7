// LFM2's gated short convolution, forward, Metal body (twin of short_conv.cu).
const int H = bcx_shape[2] / 3;
const int Tn = bcx_shape[1];
const long total = long(bcx_shape[0]) * Tn * H;
const long idx = long(thread_position_in_grid.x);
if (idx >= total) return;
const int h = int(idx % H);
const long row = idx / H;
const int t = int(row % Tn);
const int sg = seg[row];
float acc = 0.0f;
for (int k = 0; k < L; ++k) {
  const int j = L - 1 - k;
  if (t - j >= 0 && seg[row - j] == sg) {
    const long r = (row - j) * 3 * H;
    acc += float(w[h * L + k]) * float(bcx[r + h]) * float(bcx[r + 2 * H + h]);
  }
}
y[idx] = T(float(bcx[row * 3 * H + H + h]) * acc);
