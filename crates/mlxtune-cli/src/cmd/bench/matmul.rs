//! `mlxtune bench matmul`: square matrix product throughput.

use std::time::Instant;

use mlxtune_engine::mlx_rs::random;
use mlxtune_engine::{runtime, weights};

use crate::cmd::choices::DtypeArg;

#[derive(clap::Args)]
pub struct MatmulArgs {
    /// Rows (= columns) of each matrix.
    #[arg(long, default_value_t = 1024)]
    size: i32,
    /// Element type.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Timed repetitions (after 3 warm-up products).
    #[arg(long, default_value_t = 20)]
    iters: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: MatmulArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.size > 0 && a.iters > 0,
        "--size and --iters must be positive"
    );
    let dtype = a.dtype.dtype();
    let n = a.size;
    let x = random::normal::<f32>(&[n, n][..], None, None, None)?.as_dtype(dtype)?;
    let y = random::normal::<f32>(&[n, n][..], None, None, None)?.as_dtype(dtype)?;
    mlxtune_engine::mlx_rs::transforms::eval([&x, &y])?;
    for _ in 0..3 {
        x.matmul(&y)?.eval()?;
    }
    let start = Instant::now();
    for _ in 0..a.iters {
        x.matmul(&y)?.eval()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let gflops = 2.0 * (n as f64).powi(3) * a.iters as f64 / secs / 1e9;
    let out = serde_json::json!({
        "bench": "matmul",
        "size": n,
        "dtype": weights::dtype_name(dtype),
        "iters": a.iters,
        "seconds": secs,
        "gflops": gflops,
        "backend": runtime::backend(),
        "device": runtime::current_device(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{n}x{n} {} matmul on {}: {gflops:.1} GFLOP/s",
            weights::dtype_name(dtype),
            runtime::current_device()
        );
    }
    Ok(())
}
