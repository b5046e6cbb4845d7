// SwiGLU backward, CUDA body: with s = sigmoid(g),
//   du = dout * g * s,   dg = dout * u * s * (1 + g * (1 - s)).
// V = 16 / sizeof(T) elements per thread, as 16-byte vectors when aligned (see swiglu.cu).
// Generated signature: const T* g, Shape g_shape, int g_ndim, const T* u, const T* dout,
// T* dg, T* du.
constexpr int V = 16 / sizeof(T);
long long n = 1;
for (int k = 0; k < g_ndim; ++k) n *= g_shape[k];
const long long base = (long long)cg::this_grid().thread_rank() * V;
if (base >= n) return;
const bool vec = base + V <= n &&
    ((reinterpret_cast<unsigned long long>(g) | reinterpret_cast<unsigned long long>(u) |
      reinterpret_cast<unsigned long long>(dout) | reinterpret_cast<unsigned long long>(dg) |
      reinterpret_cast<unsigned long long>(du)) & 15) == 0;
alignas(16) T ga[V];
alignas(16) T ua[V];
alignas(16) T da[V];
alignas(16) T dga[V];
alignas(16) T dua[V];
if (vec) {
  *reinterpret_cast<uint4*>(ga) = *reinterpret_cast<const uint4*>(g + base);
  *reinterpret_cast<uint4*>(ua) = *reinterpret_cast<const uint4*>(u + base);
  *reinterpret_cast<uint4*>(da) = *reinterpret_cast<const uint4*>(dout + base);
} else {
  for (int j = 0; j < V; ++j) {
    const bool in = base + j < n;
    ga[j] = in ? g[base + j] : static_cast<T>(0.0f);
    ua[j] = in ? u[base + j] : static_cast<T>(0.0f);
    da[j] = in ? dout[base + j] : static_cast<T>(0.0f);
  }
}
#pragma unroll
for (int j = 0; j < V; ++j) {
  const float a = static_cast<float>(ga[j]);
  const float b = static_cast<float>(ua[j]);
  const float d = static_cast<float>(da[j]);
  const float s = 1.0f / (1.0f + expf(-a));
  dua[j] = static_cast<T>(d * a * s);
  dga[j] = static_cast<T>(d * b * s * (1.0f + a * (1.0f - s)));
}
if (vec) {
  *reinterpret_cast<uint4*>(dg + base) = *reinterpret_cast<const uint4*>(dga);
  *reinterpret_cast<uint4*>(du + base) = *reinterpret_cast<const uint4*>(dua);
} else {
  for (int j = 0; j < V && base + j < n; ++j) {
    dg[base + j] = dga[j];
    du[base + j] = dua[j];
  }
}
