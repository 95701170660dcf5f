//! A bounded, oldest-first buffer: the dashboard keeps the last few hundred
//! finished requests and events, never an ever-growing history.

use std::collections::VecDeque;

/// The last `cap` items pushed; the oldest goes when a new one arrives.
#[derive(Debug)]
pub(super) struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T: Clone> Ring<T> {
    /// An empty buffer keeping at most `cap` items (`0` keeps none).
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            items: VecDeque::new(),
        }
    }

    /// Keep `item`, dropping the oldest one when full.
    pub(super) fn push(&mut self, item: T) {
        if self.items.len() >= self.cap {
            self.items.pop_front();
        }
        if self.cap > 0 {
            self.items.push_back(item);
        }
    }

    /// A copy of every item, newest first: the order the page lists them in.
    pub(super) fn newest_first(&self) -> Vec<T> {
        self.items.iter().rev().cloned().collect()
    }
}
