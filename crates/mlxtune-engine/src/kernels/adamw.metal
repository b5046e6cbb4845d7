// Adam(W) update of one f32 array, Metal body (twin of adamw.cu; the formula and h's
// layout are there), four elements per thread.
// Generated signature: const device float* p, const constant int* p_shape,
// const constant int& p_ndim, const device float* s, const device float* m,
// const device float* v, const device float* h, device float* p_new, device float* m_new,
// device float* v_new, thread_position_in_grid.
ulong n = 1;
for (int k = 0; k < p_ndim; ++k) n *= ulong(p_shape[k]);
const ulong base = ulong(thread_position_in_grid.x) * 4;
const bool keep = h[12] != 0.0f;
for (int j = 0; j < 4; ++j) {
  const ulong i = base + ulong(j);
  if (i >= n) break;
  float pi = p[i], mi = m[i], vi = v[i];
  if (!keep) {
    const float g = s[i] / h[10] * h[11] + pi * h[9];
    mi = mi * h[0] + g * h[1];
    vi = vi * h[2] + g * g * h[3];
    const float update = mi / h[6] / (metal::sqrt(vi / h[7]) + h[4]);
    pi = pi * h[8] - update * h[5];
  }
  p_new[i] = pi;
  m_new[i] = mi;
  v_new[i] = vi;
}
