//! Training: configuration, adapters, optimizers, batching, checkpoints and the loop.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod lora;
pub mod optim;
pub mod spec;
pub mod step;
pub mod trainer;

pub use config::{read_config, ConfigError, FineTuneConfig};
pub use spec::TrainSpec;
pub use trainer::{train, Control, Event, Outcome, TrainResult};
