// Metal twin of adamw_group.cu: the arrays of threadgroup_position_in_grid.y, picked by the
// lines before this one (adamw_group.rs); adamw_step.metal (appended) updates four elements.
const ulong base = ulong(thread_position_in_grid.x) * 4;
