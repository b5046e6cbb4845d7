// Metal twin of adamw_squares.cu: Σ (s / denom)^2 of one array per row of threadgroups,
// each threadgroup of the row summing a fixed stride of it and writing its part to
// sq[y * groups + x], through simd sums. The lines before this one pick `s` and `n` for
// threadgroup_position_in_grid.y (adamw_group.rs).
const float d = h[10];
float acc = 0.0f;
const ulong stride = threads_per_grid.x;
for (ulong i = thread_position_in_grid.x; i < n; i += stride) {
  const float x = float(s[i]) / d;
  acc += x * x;
}
acc = metal::simd_sum(acc);
threadgroup float part[32];
if (thread_index_in_simdgroup == 0) part[simdgroup_index_in_threadgroup] = acc;
threadgroup_barrier(metal::mem_flags::mem_threadgroup);
if (simdgroup_index_in_threadgroup == 0) {
  const uint groups = (threads_per_threadgroup.x + 31) / 32;
  acc = thread_index_in_simdgroup < groups ? part[thread_index_in_simdgroup] : 0.0f;
  acc = metal::simd_sum(acc);
  const ulong row = threads_per_grid.x / threads_per_threadgroup.x;
  if (thread_index_in_simdgroup == 0)
    sq[threadgroup_position_in_grid.y * row + threadgroup_position_in_grid.x] = acc;
}
