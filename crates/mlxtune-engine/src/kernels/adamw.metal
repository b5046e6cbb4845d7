// Adam(W) update of one f32 array, Metal body (twin of adamw.cu; the formula and h's
// layout are there), four elements per thread; adamw_step.metal (appended) updates them.
// Generated signature: const device float* p, const constant int* p_shape,
// const constant int& p_ndim, const device G* s, const device float* m,
// const device float* v, const device float* h, device float* p_new, device float* m_new,
// device float* v_new, thread_position_in_grid.
ulong n = 1;
for (int k = 0; k < p_ndim; ++k) n *= ulong(p_shape[k]);
const ulong base = ulong(thread_position_in_grid.x) * 4;
