// Adam(W) update of a group of f32 arrays, one per blockIdx.y (adamw.cu has the formula).
// Generated signature: const G* s0 … s{g-1} (G: the gradients' dtype), const float* p0 …,
// m0 …, v0 …, const float* h, const int* sizes, float* p_new0 …, m_new0 …, v_new0 …; the
// lines before this one pick the block's arrays and `n` (adamw_group.rs); adamw_step.cu
// (appended) updates four elements.
const long long base = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
if (base >= n) return;
