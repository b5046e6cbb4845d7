//! A run's micro-batches in order, built ahead of the step that takes them: a thread turns
//! the data order ([`Order`]) into host batches (token ids, targets, mask, segments) while
//! the device computes, so the trainer only copies each into arrays. A jump (a resume, a
//! retried step, a new micro-batch split) restarts the thread at the position asked for,
//! so what the trainer gets never depends on whether, or how far, it was built ahead.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::data::batch::{HostBatch, Plan};
use crate::data::Example;

/// Which micro-batch a run's position `micro` stands for: epoch `micro / (batches ×
/// split)` in [`Plan::epoch_order`]'s order for `seed`, each batch cut into `split` parts,
/// each part into `ranks` shares of which this process takes share `rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub seed: u64,
    pub split: u32,
    pub rank: usize,
    pub ranks: usize,
}

/// Builds the host batches of one [`Order`] (the epoch's shuffle kept between calls).
struct Builder {
    examples: Arc<Vec<Example>>,
    plan: Arc<Plan>,
    order: Order,
    shuffle: Option<(u64, Vec<usize>)>,
}

impl Builder {
    fn build(&mut self, micro: u64) -> HostBatch {
        let split = self.order.split.max(1) as u64;
        let per_epoch = self.plan.batches.len() as u64 * split;
        let (epoch, within) = (micro / per_epoch, micro % per_epoch);
        if self.shuffle.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let order = self.plan.epoch_order(self.order.seed, epoch);
            self.shuffle = Some((epoch, order));
        }
        let b = self
            .shuffle
            .as_ref()
            .map_or(0, |(_, o)| o[(within / split) as usize]);
        let ranks = self.order.ranks.max(1);
        let part = (within % split) as usize * ranks + self.order.rank;
        self.plan
            .host_part(&self.examples, b, part, split as usize * ranks)
    }
}

/// A thread building from `next` on, at most `depth` batches ahead.
struct Ahead {
    order: Order,
    next: u64,
    rx: Option<Receiver<HostBatch>>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Without its receiver the thread's next send fails and it ends.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The source of a run's micro-batches; `depth` 0 builds each when asked.
pub struct Prefetcher {
    examples: Arc<Vec<Example>>,
    plan: Arc<Plan>,
    depth: usize,
    ahead: Option<Ahead>,
    inline: Option<Builder>,
}

impl Prefetcher {
    pub fn new(examples: Arc<Vec<Example>>, plan: Arc<Plan>, depth: usize) -> Prefetcher {
        Prefetcher {
            examples,
            plan,
            depth,
            ahead: None,
            inline: None,
        }
    }

    /// Micro-batch `micro` of the run in `order`. Asking for the one after the last keeps
    /// the thread's work; any other position starts it again from there.
    pub fn get(&mut self, order: Order, micro: u64) -> HostBatch {
        if self.depth == 0 {
            return self.build_inline(order, micro);
        }
        let current = self
            .ahead
            .as_ref()
            .is_some_and(|a| a.order == order && a.next == micro);
        if !current {
            self.ahead = None;
            self.ahead = Some(self.spawn(order, micro));
        }
        let received = self.ahead.as_mut().and_then(|a| {
            let b = a.rx.as_ref()?.recv().ok()?;
            a.next += 1;
            Some(b)
        });
        // A thread that could not build (it panicked) leaves the work, and the panic, here.
        received.unwrap_or_else(|| {
            self.ahead = None;
            self.build_inline(order, micro)
        })
    }

    fn build_inline(&mut self, order: Order, micro: u64) -> HostBatch {
        let builder = match self.inline.take() {
            Some(b) if b.order == order => b,
            _ => self.builder(order),
        };
        self.inline.insert(builder).build(micro)
    }

    fn builder(&self, order: Order) -> Builder {
        Builder {
            examples: self.examples.clone(),
            plan: self.plan.clone(),
            order,
            shuffle: None,
        }
    }

    fn spawn(&self, order: Order, from: u64) -> Ahead {
        let (tx, rx) = sync_channel(self.depth);
        let mut builder = self.builder(order);
        let worker = std::thread::Builder::new()
            .name("mlxtune-batches".into())
            .spawn(move || {
                for micro in from.. {
                    if tx.send(builder.build(micro)).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Ahead {
            order,
            next: from,
            rx: worker.is_some().then_some(rx),
            worker,
        }
    }
}
