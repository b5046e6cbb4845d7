//! The width a batch is padded to. A compiled step is traced again for every new batch
//! width, and MLX compiles that shape's kernels the first time a machine sees it, so a
//! compiled job's batches take few widths: packed rows all take the widest row's, and
//! bucketed batches a short ladder of widths chosen from the plan itself ([`ladder`]), as
//! many as pay for their traces in padding saved over the run.

/// How a batch's natural width (its longest row) becomes the width it is built at.
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// Up to a multiple of this (1: the natural width).
    Multiple(usize),
    /// Up to the least of these (ascending) that holds it; past the last, a multiple of 8.
    Ladder(Vec<usize>),
}

/// A new width costs about as much time as this many steps of the widest batch. Measured
/// on an H200 (LFM2-1.2B, LoRA, 8 rows, docs/benchmarks.md, tenth round): a width new to
/// the machine 1–4 s, one whose kernels MLX had compiled before 0.1–0.4 s, against 0.16 s
/// per step of 8 × 1,416.
pub const TRACE_STEPS: f64 = 10.0;

/// Ladder widths are multiples of this (matrix tiles like whole multiples of 8).
const ALIGN: usize = 8;

/// At most this many widths: each adds its CUDA graphs to MLX's cache (400 by default), and
/// a cache too small for the widths in turn instantiates graphs again every step.
pub const MAX_WIDTHS: usize = 8;

impl Padding {
    /// The width a batch whose longest row has `natural` positions is built at.
    pub fn width(&self, natural: usize) -> usize {
        let natural = natural.max(1);
        match self {
            Padding::Multiple(m) => natural.next_multiple_of((*m).max(1)),
            Padding::Ladder(widths) => widths
                .iter()
                .copied()
                .find(|w| *w >= natural)
                .unwrap_or_else(|| natural.next_multiple_of(ALIGN)),
        }
    }
}

/// The widths (at most [`MAX_WIDTHS`]) that minimize the positions a run computes: `epochs`
/// passes over batches of the given `(natural width, rows)`, padded up to the ladder, plus
/// [`TRACE_STEPS`] steps of the widest batch for each width's trace. The widest width is
/// always on it.
pub fn ladder(batches: &[(usize, usize)], epochs: f64) -> Vec<usize> {
    let mut rows_at: std::collections::BTreeMap<usize, usize> = Default::default();
    for &(w, rows) in batches {
        *rows_at.entry(w.max(1).next_multiple_of(ALIGN)).or_default() += rows;
    }
    let (widths, rows): (Vec<usize>, Vec<usize>) = rows_at.into_iter().unzip();
    let Some(&widest) = widths.last() else {
        return vec![];
    };
    let most_rows = batches.iter().map(|b| b.1).max().unwrap_or(1);
    let trace = TRACE_STEPS * (most_rows * widest) as f64;
    let cuts = Cuts::solve(&widths, &rows);
    let best = (1..=widths.len().min(MAX_WIDTHS))
        .min_by(|&a, &b| {
            let cost = |k: usize| epochs * cuts.cost(k) + k as f64 * trace;
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(1);
    cuts.ladder(best, &widths)
}

/// The least padded positions over ladders of each size, by dynamic programming over the
/// distinct widths (ascending): `best[k][i]` covers widths `0..=i` with `k + 1` ladder
/// widths, the last at `i`; `from[k][i]` is the ladder width before it.
struct Cuts {
    best: Vec<Vec<f64>>,
    from: Vec<Vec<usize>>,
}

impl Cuts {
    fn solve(widths: &[usize], rows: &[usize]) -> Cuts {
        let n = widths.len();
        let mut below = vec![0usize; n + 1];
        for i in 0..n {
            below[i + 1] = below[i] + rows[i];
        }
        // Rows of widths p+1..=i, all padded to widths[i].
        let span = |p: usize, i: usize| (widths[i] * (below[i + 1] - below[p + 1])) as f64;
        let mut best = vec![(0..n).map(|i| (widths[i] * below[i + 1]) as f64).collect()];
        let mut from = vec![vec![0; n]];
        for k in 1..n {
            let prev: &Vec<f64> = &best[k - 1];
            let (mut row, mut back) = (vec![f64::INFINITY; n], vec![0; n]);
            for i in k..n {
                for (p, before) in prev.iter().enumerate().take(i).skip(k - 1) {
                    let c = before + span(p, i);
                    if c < row[i] {
                        (row[i], back[i]) = (c, p);
                    }
                }
            }
            best.push(row);
            from.push(back);
        }
        Cuts { best, from }
    }

    /// The positions a ladder of `k` widths computes per epoch.
    fn cost(&self, k: usize) -> f64 {
        self.best[k - 1].last().copied().unwrap_or(0.0)
    }

    fn ladder(&self, k: usize, widths: &[usize]) -> Vec<usize> {
        let mut at = widths.len() - 1;
        let mut out = vec![widths[at]];
        for level in (1..k).rev() {
            at = self.from[level][at];
            out.push(widths[at]);
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every ladder of `k` widths out of `widths` (the last always on it), by brute force:
    /// the least positions one epoch computes.
    fn brute(batches: &[(usize, usize)], k: usize) -> f64 {
        let widths = distinct(batches);
        let (top, rest) = widths.split_last().unwrap();
        (0u32..1 << rest.len())
            .filter(|m| m.count_ones() as usize == k - 1)
            .map(|m| {
                let mut l: Vec<usize> = (0..rest.len())
                    .filter(|i| m >> i & 1 == 1)
                    .map(|i| rest[i])
                    .collect();
                l.push(*top);
                let p = Padding::Ladder(l);
                batches
                    .iter()
                    .map(|&(w, r)| (p.width(w) * r) as f64)
                    .sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// The batches' distinct aligned widths, ascending.
    fn distinct(batches: &[(usize, usize)]) -> Vec<usize> {
        let mut w: Vec<usize> = batches
            .iter()
            .map(|b| b.0.next_multiple_of(ALIGN))
            .collect();
        w.sort();
        w.dedup();
        w
    }

    #[test]
    fn each_ladder_size_pads_least_and_the_run_length_picks_the_size() {
        let batches: Vec<(usize, usize)> = (0..40)
            .map(|i| (17 + (i * i * 37) % 900, 1 + i % 3))
            .collect();
        let widths = distinct(&batches);
        let few: Vec<(usize, usize)> = batches.iter().copied().filter(|b| b.0 < 400).collect();
        let cuts = {
            let w = distinct(&few);
            let rows: Vec<usize> = w
                .iter()
                .map(|x| {
                    few.iter()
                        .filter(|b| b.0.next_multiple_of(ALIGN) == *x)
                        .map(|b| b.1)
                        .sum()
                })
                .collect();
            (Cuts::solve(&w, &rows), w.len())
        };
        for k in 1..=cuts.1.min(5) {
            assert_eq!(cuts.0.cost(k), brute(&few, k), "{k} widths");
        }
        // A short run affords one trace; a long one as many widths as are allowed.
        assert_eq!(ladder(&batches, 0.05), vec![*widths.last().unwrap()]);
        let most = ladder(&batches, 1e9);
        assert_eq!(most.len(), MAX_WIDTHS, "{most:?}");
        assert_eq!(most.last(), widths.last());
        let some = ladder(&batches, 20.0);
        assert!(some.len() > 1 && some.len() < widths.len(), "{some:?}");
        // Every batch fits its width, a multiple of 8.
        let p = Padding::Ladder(some);
        for &(w, _) in &batches {
            assert!(p.width(w) >= w && p.width(w).is_multiple_of(ALIGN));
        }
        assert_eq!(Padding::Multiple(32).width(33), 64);
        assert_eq!(Padding::Ladder(vec![16, 40]).width(41), 48);
    }
}
