//! `mlxtune bench`: commands that print measured numbers (never timed tests). Each calls
//! the engine's own APIs, so what is measured is what runs.

mod cuda_profiler;
mod init_model;
mod matmul;
mod train;
mod train_report;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Square matrix product throughput.
    Matmul(matmul::MatmulArgs),
    /// Fine-tuning throughput (tokens/s, step time, peak memory, MFU) on synthetic tokens.
    Train(train::TrainArgs),
    /// Writes a model directory of a named shape with random weights (config.json,
    /// model.safetensors, tokenizer files copied from another model), to run real jobs
    /// (`mlxtune train`, `mlxtune serve`) at a benchmark's size.
    InitModel(init_model::InitModelArgs),
}

pub fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Matmul(a) => matmul::run(a),
        Bench::Train(a) => train::run(a),
        Bench::InitModel(a) => init_model::run(a),
    }
}
