// LFM2's gated short convolution, partial weight gradients, Metal body (twin of
// short_conv_dw.cu): dw [P, H, L] float32, one thread per (chunk of ROWS rows, h).
const int H = bcx_shape[2] / 3;
const int Tn = bcx_shape[1];
const long rows = long(bcx_shape[0]) * Tn;
const long idx = long(thread_position_in_grid.x);
const long chunks = (rows + ROWS - 1) / ROWS;
if (idx >= chunks * H) return;
const int h = int(idx % H);
const long p = idx / H;
float acc[L];
for (int k = 0; k < L; ++k) acc[k] = 0.0f;
const long end = metal::min(rows, (p + 1) * ROWS);
for (long row = p * ROWS; row < end; ++row) {
  const int t = int(row % Tn);
  const int sg = seg[row];
  const float dout = float(dy[row * H + h]) * float(bcx[row * 3 * H + H + h]);
  for (int k = 0; k < L; ++k) {
    const int j = L - 1 - k;
    if (t - j >= 0 && seg[row - j] == sg) {
      const long r = (row - j) * 3 * H;
      acc[k] += dout * float(bcx[r + h]) * float(bcx[r + 2 * H + h]);
    }
  }
}
for (int k = 0; k < L; ++k) dw[(p * H + h) * L + k] = acc[k];
