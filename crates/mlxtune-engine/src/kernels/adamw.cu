// Adam(W) update of one f32 array, CUDA body: the gradient is the step's sum (G: f32, or
// the 16-bit compute dtype) scaled back and clipped, g = (s / denom) * clip + l2 * p; then
// m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, p' = decay p - lr (m' / c1) / (sqrt(v' /
// c2) + eps). When keep is set (a non-finite norm or loss) p, m and v are written back
// unchanged.
// h = [b1, 1-b1, b2, 1-b2, eps, lr, c1, c2, decay, l2, denom, clip, keep].
// Generated signature: const float* p, Shape p_shape, int p_ndim, const G* s,
// const float* m, const float* v, const float* h, float* p_new, float* m_new, float* v_new.
// This part finds the thread's elements; adamw_step.cu (appended) updates them.
long long n = 1;
for (int k = 0; k < p_ndim; ++k) n *= p_shape[k];
const long long base = (long long)cg::this_grid().thread_rank() * 4;
if (base >= n) return;
