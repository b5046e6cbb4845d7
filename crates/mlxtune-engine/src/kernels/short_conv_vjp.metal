// LFM2's gated short convolution, backward for bcx, Metal body (twin of short_conv_vjp.cu).
const int H = bcx_shape[2] / 3;
const int Tn = bcx_shape[1];
const long total = long(bcx_shape[0]) * Tn * H;
const long idx = long(thread_position_in_grid.x);
if (idx >= total) return;
const int h = int(idx % H);
const long row = idx / H;
const int t = int(row % Tn);
const int sg = seg[row];
float conv = 0.0f, dbx = 0.0f;
for (int k = 0; k < L; ++k) {
  const int j = L - 1 - k;
  const float wk = float(w[h * L + k]);
  if (t - j >= 0 && seg[row - j] == sg) {
    const long r = (row - j) * 3 * H;
    conv += wk * float(bcx[r + h]) * float(bcx[r + 2 * H + h]);
  }
  if (t + j < Tn && seg[row + j] == sg) {
    dbx += wk * float(dy[(row + j) * H + h]) * float(bcx[(row + j) * 3 * H + H + h]);
  }
}
const long r = row * 3 * H;
dbcx[r + h] = T(dbx * float(bcx[r + 2 * H + h]));
dbcx[r + H + h] = T(float(dy[idx]) * conv);
dbcx[r + 2 * H + h] = T(dbx * float(bcx[r + h]));
