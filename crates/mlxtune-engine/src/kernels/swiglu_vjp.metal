// SwiGLU backward, Metal body (twin of swiglu_vjp.cu): with s = sigmoid(g),
//   du = dout * g * s,   dg = dout * u * s * (1 + g * (1 - s)).
ulong n = 1;
for (int k = 0; k < g_ndim; ++k) n *= ulong(g_shape[k]);
const ulong base = ulong(thread_position_in_grid.x) * 4;
for (int j = 0; j < 4; ++j) {
  const ulong i = base + ulong(j);
  if (i < n) {
    const float a = float(g[i]);
    const float b = float(u[i]);
    const float d = float(dout[i]);
    const float s = 1.0f / (1.0f + metal::exp(-a));
    du[i] = T(d * a * s);
    dg[i] = T(d * b * s * (1.0f + a * (1.0f - s)));
  }
}
