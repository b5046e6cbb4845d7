//! Training: configuration, adapters, optimizers, checkpoints, the step and the loop.
//!
//! The path of a run: [`config`] (the file as written) → [`spec`] (validated, defaults
//! resolved) → [`prepare`] (model, tokenizer, data, trainables, batch plan) → [`trainer`]
//! (the loop, one [`stepper`] step at a time, [`checkpoint`]s, [`events`] to the caller).

pub mod board;
pub mod bounds;
pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod events;
pub mod lora;
pub mod memory;
pub mod memory_floor;
pub mod metrics_log;
pub mod optim;
pub mod order;
pub mod prepare;
pub mod spec;
pub mod step;
pub mod step_functions;
pub mod stepper;
pub mod strict;
pub mod tensorboard;
pub mod trainer;

pub use config::{read_config, ConfigError, FineTuneConfig};
pub use events::{Control, EvalMetrics, Event, Level, Outcome, Started, StepMetrics, TrainResult};
pub use spec::TrainSpec;
pub use trainer::{train, train_in_group, train_interruptible, ResumeFrom};
