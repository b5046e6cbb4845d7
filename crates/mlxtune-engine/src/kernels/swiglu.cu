// SwiGLU forward, CUDA body: out = silu(g) * u in float. Each thread takes V = 16 / sizeof(T)
// consecutive elements, loaded and stored as one 16-byte vector when the three buffers are
// 16-byte aligned and the run is whole (element by element otherwise).
// Generated signature: const T* g, Shape g_shape, int g_ndim, const T* u, T* out.
constexpr int V = 16 / sizeof(T);
long long n = 1;
for (int k = 0; k < g_ndim; ++k) n *= g_shape[k];
const long long base = (long long)cg::this_grid().thread_rank() * V;
if (base >= n) return;
const bool vec = base + V <= n &&
    ((reinterpret_cast<unsigned long long>(g) | reinterpret_cast<unsigned long long>(u) |
      reinterpret_cast<unsigned long long>(out)) & 15) == 0;
alignas(16) T ga[V];
alignas(16) T ua[V];
alignas(16) T oa[V];
if (vec) {
  *reinterpret_cast<uint4*>(ga) = *reinterpret_cast<const uint4*>(g + base);
  *reinterpret_cast<uint4*>(ua) = *reinterpret_cast<const uint4*>(u + base);
} else {
  for (int j = 0; j < V; ++j) {
    ga[j] = base + j < n ? g[base + j] : static_cast<T>(0.0f);
    ua[j] = base + j < n ? u[base + j] : static_cast<T>(0.0f);
  }
}
#pragma unroll
for (int j = 0; j < V; ++j) {
  const float a = static_cast<float>(ga[j]);
  const float s = 1.0f / (1.0f + expf(-a));
  oa[j] = static_cast<T>(a * s * static_cast<float>(ua[j]));
}
if (vec) {
  *reinterpret_cast<uint4*>(out + base) = *reinterpret_cast<const uint4*>(oa);
} else {
  for (int j = 0; j < V && base + j < n; ++j) out[base + j] = oa[j];
}
