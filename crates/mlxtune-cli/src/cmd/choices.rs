//! Every choice a flag offers, as a clap `ValueEnum`: `--help` lists the values and a value
//! outside them is a usage error (exit 2) before anything runs.

use clap::ValueEnum;
use mlxtune_engine::weights::Dtype;

/// A floating-point dtype (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
}

impl DtypeArg {
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::F32 => Dtype::Float32,
            DtypeArg::Bf16 => Dtype::Bfloat16,
            DtypeArg::F16 => Dtype::Float16,
        }
    }
}

/// MLX affine quantization width: 4 or 8 bits (what QLoRA and the loaders support).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Bits {
    #[value(name = "4")]
    Four,
    #[value(name = "8")]
    Eight,
}

impl Bits {
    pub fn get(self) -> i32 {
        match self {
            Bits::Four => 4,
            Bits::Eight => 8,
        }
    }
}

/// A JSONL record format (`eval --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Completion,
    Chat,
}

impl FormatArg {
    pub fn name(self) -> &'static str {
        match self {
            FormatArg::Text => "text",
            FormatArg::Completion => "completion",
            FormatArg::Chat => "chat",
        }
    }
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One llama.cpp file.
    Gguf,
    /// A fused Hugging Face model directory.
    Hf,
    /// The adapter alone in PEFT's layout.
    Peft,
}

/// A GGUF tensor type (`export --quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GgufQuantArg {
    #[value(name = "F32")]
    F32,
    #[value(name = "F16")]
    F16,
    #[value(name = "BF16")]
    Bf16,
    #[value(name = "Q8_0")]
    Q8_0,
    #[value(name = "Q4_0")]
    Q4_0,
    #[value(name = "Q4_1")]
    Q4_1,
    #[value(name = "Q4_K_M")]
    Q4KM,
    #[value(name = "Q6_K")]
    Q6K,
}

impl GgufQuantArg {
    /// The name `GgufQuant` parses.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// A fine-tuning method (`bench train --type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FineTuneTypeArg {
    Lora,
    Dora,
    Qlora,
    Full,
}

/// A named model shape with random weights (benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    #[value(name = "lfm2-1.2b")]
    Lfm2_1_2b,
    #[value(name = "lfm2-20m")]
    Lfm2_20m,
    #[value(name = "llama-20m")]
    Llama20m,
}

impl Shape {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// What `mlxtune serve` runs (`--role`, over `server.role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The HTTP API and the workers.
    All,
    /// The HTTP API only: jobs are queued for worker processes.
    Api,
    /// Workers only: no API (the port serves /healthz and /metrics).
    Worker,
}

impl RoleArg {
    pub fn role(self) -> mlxtune_server::settings::Role {
        use mlxtune_server::settings::Role;
        match self {
            RoleArg::All => Role::All,
            RoleArg::Api => Role::Api,
            RoleArg::Worker => Role::Worker,
        }
    }
}
