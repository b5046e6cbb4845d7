//! Packed rows' example ids: on the device for the model (attention and LFM2's
//! convolution stay inside an example), and on the host for what decides the attention's
//! shapes: how far back a block of queries must look to see the whole of its examples.

use mlx_rs::Array;

/// The example ids of a micro-batch of packed rows.
pub struct Segments {
    /// Example number of each position `[B, T]` (int32; 1, 2, …; 0 is padding).
    pub ids: Array,
    /// Each row's examples' lengths in positions, in order (padding left out).
    lengths: Vec<Vec<usize>>,
}

impl Segments {
    /// From the example ids of `ids.len() / width` rows of `width` positions.
    pub fn new(ids: &[i32], width: usize) -> Segments {
        let lengths = ids
            .chunks(width.max(1))
            .map(|row| {
                row.chunk_by(|a, b| a == b)
                    .filter(|run| run[0] != 0)
                    .map(<[i32]>::len)
                    .collect()
            })
            .collect();
        let rows = ids.len().checked_div(width).unwrap_or(0) as i32;
        Segments {
            ids: Array::from_slice(ids, &[rows, width as i32]),
            lengths,
        }
    }

    /// For queries cut into blocks of `block` positions: the fewest positions before a
    /// block's first query that its keys must start at so that every query of every row
    /// sees its whole example, rounded up to a multiple of `block`. Padding does not count
    /// (it is after every example of its row and out of the loss).
    pub fn reach(&self, block: usize) -> usize {
        let most = self
            .lengths
            .iter()
            .map(|row| row_reach(row.iter().copied(), block))
            .max()
            .unwrap_or(0);
        most.next_multiple_of(block.max(1))
    }
}

/// The most positions any block of `block` queries starts into its example, in a row of
/// examples of `lengths` positions one after another (not rounded).
pub fn row_reach(lengths: impl IntoIterator<Item = usize>, block: usize) -> usize {
    let block = block.max(1);
    let (mut most, mut start) = (0, 0);
    for len in lengths {
        let end = start + len;
        if start.next_multiple_of(block) < end {
            most = most.max((end - 1) / block * block - start);
        }
        start = end;
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reaches_back_to_the_start_of_the_example_its_first_query_is_in() {
        // Row 0: examples of 3, 6 and 2 positions, then 1 of padding; row 1: one of 12.
        let ids = [
            1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 0, //
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        ];
        let s = Segments::new(&ids, 12);
        assert_eq!(s.ids.shape(), &[2, 12]);
        // Row 1's block starting at 8 begins 8 positions into its example.
        assert_eq!(s.reach(4), 8);
        let row0 = Segments::new(&ids[..12], 12);
        // Blocks of 4 start at 0, 4 (1 into example 2) and 8 (5 into it): 5 → 8.
        assert_eq!(row0.reach(4), 8);
        // Blocks of 3 start at 0, 3, 6 (3 into example 2) and 9 (a new example): 3.
        assert_eq!(row0.reach(3), 3);
        // Padding right after a long example does not count.
        let padded = Segments::new(&[1, 2, 2, 0, 0, 0], 6);
        assert_eq!(padded.reach(3), 0);
        // The same rows from their examples' lengths (what a plan holds).
        assert_eq!(row_reach([3, 6, 2], 4), 5);
        assert_eq!(row_reach([3, 6, 2], 3), 3);
        assert_eq!(row_reach([12], 4), 8);
        assert_eq!(row_reach([], 4), 0);
    }
}
