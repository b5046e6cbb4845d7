// The Adam(W) update of the four elements from `base` of an array of `n` (adamw.cu has the
// formula). Appended to a body that defines p, s, m, v, p_new, m_new, v_new, h, n and base
// (adamw.metal, adamw_group.rs).
const bool keep = h[12] != 0.0f;
for (int j = 0; j < 4; ++j) {
  const ulong i = base + ulong(j);
  if (i >= n) break;
  float pi = p[i], mi = m[i], vi = v[i];
  if (!keep) {
    const float g = float(s[i]) / h[10] * h[11] + pi * h[9];
    mi = mi * h[0] + g * h[1];
    vi = vi * h[2] + g * g * h[3];
    const float update = mi / h[6] / (metal::sqrt(vi / h[7]) + h[4]);
    pi = pi * h[8] - update * h[5];
  }
  p_new[i] = pi;
  m_new[i] = mi;
  v_new[i] = vi;
}
