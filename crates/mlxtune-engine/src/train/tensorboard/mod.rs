//! TensorBoard event files (`<output>/tensorboard/events.out.tfevents.*`), written by our own
//! small writer: TFRecord framing ([`record`]) of hand-encoded protobuf events ([`proto`]).
//! Scalars every step and validation; histograms of trainable arrays and their gradients at
//! checkpoints. Read by TensorBoard itself (tested with its `EventAccumulator`).

pub mod proto;
pub mod record;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use proto::{Histogram, Value};

use crate::error::{EngineError, Result};

/// Buckets of the histograms we write.
const BUCKETS: usize = 30;

/// An open event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// A new event file in `dir` (a resumed run gets a file of its own).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let name = format!(
            "events.out.tfevents.{}.{host}.{}",
            now() as u64,
            crate::fsutil::unique_suffix()
        );
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| EngineError::io(&path, e))?;
        let mut w = EventWriter { path, file };
        w.write(&proto::file_version_event(now()))?;
        Ok(w)
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        let bytes = record::frame(event);
        self.file
            .write_all(&bytes)
            .and_then(|_| self.file.flush())
            .map_err(|e| EngineError::io(&self.path, e))
    }

    /// Scalars of one step.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let values: Vec<(&str, Value)> = values
            .iter()
            .map(|(t, v)| (*t, Value::Scalar(*v as f32)))
            .collect();
        self.write(&proto::summary_event(now(), step as i64, &values))
    }

    /// Histograms of one step, one per tagged list of values.
    pub fn histograms(&mut self, step: u64, values: &[(String, Vec<f32>)]) -> Result<()> {
        let values: Vec<(&str, Value)> = values
            .iter()
            .map(|(t, v)| (t.as_str(), Value::Histogram(histogram(v))))
            .collect();
        self.write(&proto::summary_event(now(), step as i64, &values))
    }
}

/// Equal-width buckets between the smallest and the largest value.
pub fn histogram(values: &[f32]) -> Histogram {
    let finite = values.iter().map(|v| *v as f64).filter(|v| v.is_finite());
    let (mut min, mut max, mut sum, mut sum_squares, mut num) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0.0);
    for v in finite.clone() {
        (min, max) = (min.min(v), max.max(v));
        (sum, sum_squares, num) = (sum + v, sum_squares + v * v, num + 1.0);
    }
    if num == 0.0 {
        (min, max) = (0.0, 0.0);
    }
    let width = (max - min) / BUCKETS as f64;
    let bucket_limit: Vec<f64> = if width > 0.0 {
        (1..=BUCKETS).map(|i| min + width * i as f64).collect()
    } else {
        vec![max]
    };
    let mut bucket = vec![0.0; bucket_limit.len()];
    for v in finite {
        let i = if width > 0.0 {
            (((v - min) / width).ceil() as usize).clamp(1, BUCKETS) - 1
        } else {
            0
        };
        bucket[i] += 1.0;
    }
    Histogram {
        min,
        max,
        num,
        sum,
        sum_squares,
        bucket_limit,
        bucket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_every_value_once() {
        let values: Vec<f32> = (0..100).map(|i| i as f32 / 10.0).collect();
        let h = histogram(&values);
        assert_eq!((h.min, h.num), (0.0, 100.0));
        assert!((h.max - 9.9).abs() < 1e-6);
        assert_eq!(h.bucket.iter().sum::<f64>(), 100.0);
        assert_eq!(h.bucket_limit.len(), BUCKETS);
        assert!((h.bucket_limit[BUCKETS - 1] - h.max).abs() < 1e-9);
        assert!(h.bucket.iter().all(|c| *c > 0.0), "{:?}", h.bucket);
    }

    #[test]
    fn constant_and_empty_inputs_make_one_bucket() {
        let h = histogram(&[0.5, 0.5]);
        assert_eq!(
            (h.bucket_limit.clone(), h.bucket.clone()),
            (vec![0.5], vec![2.0])
        );
        let e = histogram(&[]);
        assert_eq!((e.num, e.bucket.clone()), (0.0, vec![0.0]));
    }
}
