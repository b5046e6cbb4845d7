//! Batching: length-bucketed batches (similar lengths together, so little padding), or
//! packed rows (several examples per row, attention kept within each); a seeded shuffle of
//! the batch order per epoch, so that an epoch's order can be recomputed on resume.
//! A batch is built on the host first ([`HostBatch`], on any thread: `prefetch.rs` builds
//! them ahead of the step), then copied into arrays.

use mlx_rs::Array;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::segments::{row_reach, Segments};
pub use crate::data::widths::Padding;
use crate::data::Example;

/// One micro-batch as arrays.
pub struct TrainBatch {
    pub inputs: Array,
    pub targets: Array,
    pub mask: Array,
    /// Packed rows only: the example of each position.
    pub segments: Option<Segments>,
    /// Positions that count in the loss.
    pub loss_tokens: u64,
    /// Non-padding positions.
    pub real_tokens: u64,
    /// All positions (rows × width).
    pub total_tokens: u64,
}

/// A row: the examples it holds (one unless packed).
pub type Row = Vec<usize>;

/// The fixed plan of rows and batches of a dataset.
pub struct Plan {
    /// Batches of rows, in length order (shuffled per epoch by [`Plan::epoch_order`]).
    pub batches: Vec<Vec<Row>>,
    pub packed: bool,
    /// The width each batch is built at (few distinct shapes for a compiled step); padded
    /// positions are masked.
    pub padding: Padding,
}

impl Plan {
    /// Groups examples into batches of `batch_size` rows. Packed rows hold examples whose
    /// predicted positions (length − 1) add up to at most `row_len`.
    pub fn new(examples: &[Example], batch_size: usize, packing: bool, row_len: usize) -> Plan {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.sort_by_key(|i| (examples[*i].ids.len(), *i));
        let rows: Vec<Row> = if packing {
            // First fit, longest first.
            let mut rows: Vec<(usize, Row)> = Vec::new();
            for &i in order.iter().rev() {
                let n = examples[i].ids.len() - 1;
                match rows.iter_mut().find(|(used, _)| used + n <= row_len) {
                    Some((used, row)) => {
                        *used += n;
                        row.push(i);
                    }
                    None => rows.push((n, vec![i])),
                }
            }
            rows.into_iter().map(|(_, r)| r).collect()
        } else {
            order.into_iter().map(|i| vec![i]).collect()
        };
        let batches = rows.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect();
        Plan {
            batches,
            packed: packing,
            padding: Padding::Multiple(1),
        }
    }

    /// The batch order of `epoch` (a permutation of batch indices) for `seed`.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.batches.len()).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        idx.shuffle(&mut rng);
        idx
    }

    /// Builds the arrays of batch `b`.
    pub fn make(&self, examples: &[Example], b: usize) -> TrainBatch {
        self.make_part(examples, b, 0, 1)
    }

    /// Part `part` of `parts` of batch `b` (its rows cut into `parts` consecutive groups);
    /// the parts together hold exactly the batch's rows.
    pub fn make_part(
        &self,
        examples: &[Example],
        b: usize,
        part: usize,
        parts: usize,
    ) -> TrainBatch {
        self.host_part(examples, b, part, parts).into_batch()
    }

    /// [`Plan::make_part`] on the host, before it becomes arrays.
    pub fn host_part(
        &self,
        examples: &[Example],
        b: usize,
        part: usize,
        parts: usize,
    ) -> HostBatch {
        let rows = &self.batches[b];
        let per = rows.len().div_ceil(parts.max(1));
        let lo = (part * per).min(rows.len());
        let hi = ((part + 1) * per).min(rows.len());
        let rows = if parts <= 1 { &rows[..] } else { &rows[lo..hi] };
        let width = self.padding.width(natural_width(examples, rows.iter()));
        HostBatch::build_at(examples, rows, self.packed, width)
    }

    /// Packed plans: the reach ([`Segments::reach`]) that covers every batch, for query
    /// blocks of `block` positions; 0 for plans that are not packed.
    pub fn packed_reach(&self, examples: &[Example], block: usize) -> usize {
        if !self.packed {
            return 0;
        }
        let most = self
            .batches
            .iter()
            .flatten()
            .map(|row| row_reach(positions(examples, row), block))
            .max()
            .unwrap_or(0);
        most.next_multiple_of(block.max(1))
    }

    /// The widest batch's width in positions (as padded).
    pub fn width(&self, examples: &[Example]) -> usize {
        self.padding
            .width(natural_width(examples, self.batches.iter().flatten()))
    }

    /// Each batch's natural width (its longest row) and rows.
    pub fn natural_widths(&self, examples: &[Example]) -> Vec<(usize, usize)> {
        self.batches
            .iter()
            .map(|b| (natural_width(examples, b.iter()), b.len()))
            .collect()
    }

    /// Rows of the largest batch.
    pub fn max_rows(&self) -> usize {
        self.batches.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The positions each example of `row` takes (its tokens but the last, only a target).
fn positions<'a>(examples: &'a [Example], row: &'a Row) -> impl Iterator<Item = usize> + 'a {
    row.iter().map(|i| examples[*i].ids.len() - 1)
}

/// The widest of `rows` in positions, at least 1.
fn natural_width<'a>(examples: &[Example], rows: impl Iterator<Item = &'a Row>) -> usize {
    let most = rows.map(|r| positions(examples, r).sum::<usize>());
    most.max().unwrap_or(1).max(1)
}

/// Right-padded arrays for `rows`.
pub fn make_batch(examples: &[Example], rows: &[Row], packed: bool, pad_to: usize) -> TrainBatch {
    HostBatch::build(examples, rows, packed, pad_to).into_batch()
}

/// A micro-batch's contents on the host, row-major `rows × width`: what [`TrainBatch`]'s
/// arrays are made from. Plain data, so any thread can build it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub rows: usize,
    pub width: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    pub mask: Vec<f32>,
    /// Packed rows only: example number of each position (1, 2, …; 0 is padding).
    pub segments: Option<Vec<i32>>,
    pub loss_tokens: u64,
    pub real_tokens: u64,
}

impl HostBatch {
    /// Right-padded rows of `examples` (a width of 1 when `rows` is empty).
    pub fn build(examples: &[Example], rows: &[Row], packed: bool, pad_to: usize) -> HostBatch {
        let width = match rows.is_empty() {
            true => 1,
            false => Padding::Multiple(pad_to).width(natural_width(examples, rows.iter())),
        };
        HostBatch::build_at(examples, rows, packed, width)
    }

    /// Rows of `examples` right-padded to `width` positions (at least the longest row's).
    pub fn build_at(examples: &[Example], rows: &[Row], packed: bool, width: usize) -> HostBatch {
        let n = rows.len();
        let mut inputs = vec![0i32; n * width];
        let mut targets = vec![0i32; n * width];
        let mut mask = vec![0f32; n * width];
        let mut segments = vec![0i32; n * width];
        let (mut loss_tokens, mut real) = (0u64, 0u64);
        for (r, row) in rows.iter().enumerate() {
            let mut at = r * width;
            for (k, &i) in row.iter().enumerate() {
                let e = &examples[i];
                for t in 0..e.ids.len() - 1 {
                    inputs[at] = e.ids[t] as i32;
                    targets[at] = e.ids[t + 1] as i32;
                    segments[at] = k as i32 + 1;
                    if e.mask[t + 1] {
                        mask[at] = 1.0;
                        loss_tokens += 1;
                    }
                    real += 1;
                    at += 1;
                }
            }
        }
        HostBatch {
            rows: n,
            width,
            inputs,
            targets,
            mask,
            segments: (packed && n > 0).then_some(segments),
            loss_tokens,
            real_tokens: real,
        }
    }

    /// The batch as arrays (an empty batch is `[0, 1]`).
    pub fn into_batch(self) -> TrainBatch {
        let shape = [self.rows as i32, self.width as i32];
        TrainBatch {
            inputs: Array::from_slice(&self.inputs, &shape),
            targets: Array::from_slice(&self.targets, &shape),
            mask: Array::from_slice(&self.mask, &shape),
            segments: self.segments.map(|s| Segments::new(&s, self.width)),
            loss_tokens: self.loss_tokens,
            real_tokens: self.real_tokens,
            total_tokens: (self.rows * self.width) as u64,
        }
    }
}
