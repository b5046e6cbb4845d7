//! Data parallelism over MLX's own distributed group (mlx-c's `mlx_distributed_*`, which
//! mlx-rs does not wrap): the ring backend (TCP, CPUs and Macs), NCCL (CUDA) or MPI.
//!
//! Every rank runs the same trainer on its share of each micro-batch; the step's gradient
//! sums, loss sum and token counts are summed across ranks before the step normalizes them,
//! so every rank applies the same update as one process with the whole batch would. The
//! process learns its rank and the group from the environment `mlxtune launch` sets up
//! ([`ENV_BACKEND`] plus MLX's own variables: `MLX_RANK`, `MLX_HOSTFILE` for the ring,
//! `MLX_WORLD_SIZE`, `NCCL_HOST_IP`, `NCCL_PORT` for NCCL).

use std::ffi::CString;

use mlx_rs::{Array, Dtype, Stream};
use mlx_sys as sys;

use super::stepper::Gradients;
use crate::error::{EngineError, Result};
use crate::weights::Weights;

/// The variable `mlxtune launch` sets in each rank's environment: the backend to join.
pub const ENV_BACKEND: &str = "MLXTUNE_DISTRIBUTED";

/// Gradients are summed in flattened buckets of at most this many elements (256 MiB of
/// f32): a few large collective calls instead of one per array.
pub const BUCKET_ELEMENTS: usize = 1 << 26;

/// A distributed backend of MLX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Ring,
    Nccl,
    Mpi,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Ring => "ring",
            Backend::Nccl => "nccl",
            Backend::Mpi => "mpi",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "ring" => Ok(Backend::Ring),
            "nccl" => Ok(Backend::Nccl),
            "mpi" => Ok(Backend::Mpi),
            _ => Err(EngineError::invalid(
                "distributed.backend",
                format!("`{s}` is not one of ring, nccl, mpi"),
            )),
        }
    }
}

/// This process's membership of a distributed group.
pub struct Group {
    raw: sys::mlx_distributed_group,
    rank: usize,
    size: usize,
    backend: Backend,
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { sys::mlx_distributed_group_free(self.raw) };
    }
}

impl Group {
    /// The group named by [`ENV_BACKEND`], or None when the variable is unset (one process).
    pub fn from_env() -> Result<Option<Group>> {
        match std::env::var(ENV_BACKEND) {
            Ok(b) if !b.is_empty() => Group::init(b.parse()?).map(Some),
            _ => Ok(None),
        }
    }

    /// Joins the group of `backend` (blocking until every rank has joined).
    pub fn init(backend: Backend) -> Result<Group> {
        crate::runtime::init()?;
        check_environment(backend)?;
        let name = CString::new(backend.as_str()).expect("no NUL in a backend name");
        if !unsafe { sys::mlx_distributed_is_available(name.as_ptr()) } {
            return Err(EngineError::Device(format!(
                "this MLX build has no `{}` distributed backend",
                backend.as_str()
            )));
        }
        let mut raw = unsafe { sys::mlx_distributed_group_new() };
        if unsafe { sys::mlx_distributed_init(&mut raw, true, name.as_ptr()) } != 0 {
            return Err(EngineError::Mlx(format!(
                "could not join the `{}` distributed group ({})",
                backend.as_str(),
                describe_environment(backend)
            )));
        }
        let rank = unsafe { sys::mlx_distributed_group_rank(raw) };
        let size = unsafe { sys::mlx_distributed_group_size(raw) };
        Ok(Group {
            raw,
            rank: rank.max(0) as usize,
            size: size.max(1) as usize,
            backend,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Rank 0 writes the run's files and reports its events.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// NCCL sums on the GPU; the ring and MPI sum host memory.
    fn stream(&self) -> Stream {
        match self.backend {
            Backend::Nccl => Stream::new(),
            Backend::Ring | Backend::Mpi => Stream::cpu(),
        }
    }

    /// Σ over ranks of `x` (lazy: evaluated with the graph that uses it).
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_sum, "all_sum")
    }

    /// max over ranks of `x` (lazy).
    pub fn all_max(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_max, "all_max")
    }

    fn collective(
        &self,
        x: &Array,
        op: unsafe extern "C" fn(
            *mut sys::mlx_array,
            sys::mlx_array,
            sys::mlx_distributed_group,
            sys::mlx_stream,
        ) -> std::ffi::c_int,
        what: &str,
    ) -> Result<Array> {
        let stream = self.stream();
        let mut res = unsafe { sys::mlx_array_new() };
        let status = unsafe { op(&mut res, x.as_ptr(), self.raw, stream.as_ptr()) };
        if status != 0 {
            unsafe { sys::mlx_array_free(res) };
            return Err(EngineError::Mlx(format!(
                "distributed {what} of an array of shape {:?} failed on rank {}",
                x.shape(),
                self.rank
            )));
        }
        Ok(unsafe { Array::from_ptr(res) })
    }

    /// Σ over ranks of each array, in flattened buckets of one dtype and at most
    /// [`BUCKET_ELEMENTS`] elements, all evaluated together (one host sync; MLX orders the
    /// copies and collective calls on the stream).
    pub fn all_sum_bucketed(&self, arrays: &[Array]) -> Result<Vec<Array>> {
        let mut out = Vec::with_capacity(arrays.len());
        let mut start = 0;
        while start < arrays.len() {
            let end = bucket_end(arrays, start);
            out.extend(self.all_sum_bucket(&arrays[start..end])?);
            start = end;
        }
        mlx_rs::transforms::eval(&out)?;
        Ok(out)
    }

    fn all_sum_bucket(&self, arrays: &[Array]) -> Result<Vec<Array>> {
        if let [one] = arrays {
            return Ok(vec![self.all_sum(one)?]);
        }
        let flat: Vec<Array> = arrays
            .iter()
            .map(|a| a.reshape(&[-1]))
            .collect::<std::result::Result<_, _>>()?;
        let summed = self.all_sum(&mlx_rs::ops::concatenate(&flat, 0)?)?;
        let mut cuts = Vec::with_capacity(arrays.len());
        let mut at = 0i32;
        for a in &arrays[..arrays.len() - 1] {
            at += a.size() as i32;
            cuts.push(at);
        }
        summed
            .split_at_indices(&cuts, 0)?
            .into_iter()
            .zip(arrays)
            .map(|(part, a)| Ok(part.reshape(a.shape())?))
            .collect()
    }

    /// Rank 0's value of `code`, on every rank.
    pub fn from_root(&self, code: i32) -> Result<i32> {
        let mine = if self.is_root() { code } else { 0 };
        let s = self.all_sum(&Array::from_slice(&[mine], &[1]))?;
        s.eval()?;
        Ok(s.item_cast::<i32>())
    }

    /// Fails unless every rank passes the same `value` (`what` names it in the error).
    pub fn check_same(&self, value: u64, what: &str) -> Result<()> {
        let v = value as i64 as f32;
        let pair = Array::from_slice(&[v, -v], &[2]);
        let m = self.all_max(&pair)?;
        m.eval()?;
        let (hi, lo) = (m.index_f32(0), -m.index_f32(1));
        if hi != lo {
            return Err(EngineError::invalid(
                "distributed",
                format!(
                    "the ranks disagree on {what}: rank {} has {value}, the group spans {lo}..{hi}",
                    self.rank
                ),
            ));
        }
        Ok(())
    }

    /// The step's loss, token counts and gradient sums summed over the group; ranks whose
    /// share held no loss token contribute zeros. None when no rank had a loss token.
    pub fn reduce_gradients(
        &self,
        local: Option<Gradients>,
        names: &[String],
        trainable: &Weights,
    ) -> Result<Option<Gradients>> {
        let local = match local {
            Some(g) => g,
            None => zero_gradients(names, trainable)?,
        };
        let counts = [local.loss_tokens, local.real_tokens, local.total_tokens];
        let counts: Vec<i32> = counts.iter().map(|c| *c as i32).collect();
        let counts = self.all_sum(&Array::from_slice(&counts, &[3]))?;
        let loss = self.all_sum(&Array::from_slice(&[local.loss_sum as f32], &[1]))?;
        mlx_rs::transforms::eval([&counts, &loss])?;
        let c: &[i32] = counts.as_slice();
        if c[0] == 0 {
            return Ok(None);
        }
        Ok(Some(Gradients {
            sums: self.all_sum_bucketed(&local.sums)?,
            loss_sum: loss.item_cast::<f32>() as f64,
            loss_tokens: c[0] as u64,
            real_tokens: c[1] as u64,
            total_tokens: c[2] as u64,
        }))
    }
}

trait IndexF32 {
    fn index_f32(&self, i: usize) -> f32;
}

impl IndexF32 for Array {
    fn index_f32(&self, i: usize) -> f32 {
        self.as_slice::<f32>()[i]
    }
}

/// One past the last array of the bucket that starts at `start`.
fn bucket_end(arrays: &[Array], start: usize) -> usize {
    let dtype: Dtype = arrays[start].dtype();
    let mut total = arrays[start].size();
    let mut end = start + 1;
    while end < arrays.len()
        && arrays[end].dtype() == dtype
        && total + arrays[end].size() <= BUCKET_ELEMENTS
    {
        total += arrays[end].size();
        end += 1;
    }
    end
}

fn zero_gradients(names: &[String], trainable: &Weights) -> Result<Gradients> {
    let sums = names
        .iter()
        .map(|n| mlx_rs::ops::zeros_like(&trainable[n]))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Gradients {
        sums,
        loss_sum: 0.0,
        loss_tokens: 0,
        real_tokens: 0,
        total_tokens: 0,
    })
}

/// The variables `backend` needs, checked before MLX reads them (MLX's own failure would
/// not reach us with its message).
fn check_environment(backend: Backend) -> Result<()> {
    let needed: &[&str] = match backend {
        Backend::Ring => &["MLX_RANK", "MLX_HOSTFILE"],
        Backend::Nccl => &["MLX_RANK", "MLX_WORLD_SIZE", "NCCL_HOST_IP", "NCCL_PORT"],
        Backend::Mpi => &[],
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(EngineError::invalid(
        ENV_BACKEND,
        format!(
            "the `{}` backend needs {} in the environment (start the ranks with `mlxtune launch`)",
            backend.as_str(),
            missing.join(", ")
        ),
    ))
}

fn describe_environment(backend: Backend) -> String {
    let vars: &[&str] = match backend {
        Backend::Ring => &["MLX_RANK", "MLX_HOSTFILE"],
        Backend::Nccl => &["MLX_RANK", "MLX_WORLD_SIZE", "NCCL_HOST_IP", "NCCL_PORT"],
        Backend::Mpi => &["MLX_MPI_LIBNAME"],
    };
    vars.iter()
        .map(|v| format!("{v}={}", std::env::var(v).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_one_dtype_and_the_size_bound() {
        let f = |n: i32| mlx_rs::ops::zeros::<f32>(&[n]).unwrap();
        let h = |n: i32| mlx_rs::ops::zeros::<i32>(&[n]).unwrap();
        let arrays = [f(3), f(4), h(2), f(5)];
        assert_eq!(bucket_end(&arrays, 0), 2);
        assert_eq!(bucket_end(&arrays, 2), 3);
        assert_eq!(bucket_end(&arrays, 3), 4);
    }

    #[test]
    fn backend_names_parse_and_bad_ones_name_the_field() {
        assert_eq!("nccl".parse::<Backend>().unwrap(), Backend::Nccl);
        let e = "gloo".parse::<Backend>().unwrap_err().to_string();
        assert!(
            e.contains("distributed.backend") && e.contains("gloo"),
            "{e}"
        );
    }
}
