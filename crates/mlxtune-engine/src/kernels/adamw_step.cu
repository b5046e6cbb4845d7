// The Adam(W) update of the four elements from `base` of an array of `n` (adamw.cu has the
// formula): as one 16-byte vector (8 bytes for 16-bit gradients, G) when the run is whole
// and aligned. Appended to a body that defines p, s, m, v, p_new, m_new, v_new, h, n and
// base (adamw.cu, adamw_group.rs).
const bool vec = base + 4 <= n &&
    ((reinterpret_cast<unsigned long long>(p) | reinterpret_cast<unsigned long long>(s) |
      reinterpret_cast<unsigned long long>(m) | reinterpret_cast<unsigned long long>(v) |
      reinterpret_cast<unsigned long long>(p_new) | reinterpret_cast<unsigned long long>(m_new) |
      reinterpret_cast<unsigned long long>(v_new)) & 15) == 0;
alignas(16) float pa[4], sa[4], ma[4], va[4];
if (vec) {
  *reinterpret_cast<float4*>(pa) = *reinterpret_cast<const float4*>(p + base);
  if (sizeof(G) == 4) {
    *reinterpret_cast<float4*>(sa) = *reinterpret_cast<const float4*>(s + base);
  } else {  // four 16-bit gradients: one 8-byte load
    const uint2 raw = *reinterpret_cast<const uint2*>(s + base);
    const G* four = reinterpret_cast<const G*>(&raw);
    for (int j = 0; j < 4; ++j) sa[j] = static_cast<float>(four[j]);
  }
  *reinterpret_cast<float4*>(ma) = *reinterpret_cast<const float4*>(m + base);
  *reinterpret_cast<float4*>(va) = *reinterpret_cast<const float4*>(v + base);
} else {
  for (int j = 0; j < 4; ++j) {
    const bool in = base + j < n;
    pa[j] = in ? p[base + j] : 0.0f;
    sa[j] = in ? static_cast<float>(s[base + j]) : 0.0f;
    ma[j] = in ? m[base + j] : 0.0f;
    va[j] = in ? v[base + j] : 0.0f;
  }
}
if (h[12] == 0.0f) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float g = sa[j] / h[10] * h[11] + pa[j] * h[9];
    ma[j] = ma[j] * h[0] + g * h[1];
    va[j] = va[j] * h[2] + g * g * h[3];
    const float update = ma[j] / h[6] / (sqrtf(va[j] / h[7]) + h[4]);
    pa[j] = pa[j] * h[8] - update * h[5];
  }
}
if (vec) {
  *reinterpret_cast<float4*>(p_new + base) = *reinterpret_cast<const float4*>(pa);
  *reinterpret_cast<float4*>(m_new + base) = *reinterpret_cast<const float4*>(ma);
  *reinterpret_cast<float4*>(v_new + base) = *reinterpret_cast<const float4*>(va);
} else {
  for (int j = 0; j < 4 && base + j < n; ++j) {
    p_new[base + j] = pa[j];
    m_new[base + j] = ma[j];
    v_new[base + j] = va[j];
  }
}
