// SwiGLU forward, Metal body (twin of swiglu.cu): out = silu(g) * u, four per thread.
// Generated signature: const device T* g, const constant int* g_shape,
// const constant int& g_ndim, const device T* u, device T* out, thread_position_in_grid.
ulong n = 1;
for (int k = 0; k < g_ndim; ++k) n *= ulong(g_shape[k]);
const ulong base = ulong(thread_position_in_grid.x) * 4;
for (int j = 0; j < 4; ++j) {
  const ulong i = base + ulong(j);
  if (i < n) {
    const float a = float(g[i]);
    const float s = 1.0f / (1.0f + metal::exp(-a));
    out[i] = T(a * s * float(u[i]));
  }
}
