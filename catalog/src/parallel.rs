//! Column-at-a-time work on a few threads (scoped, so the work may borrow).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// `f(0)`, …, `f(n - 1)` in their order, computed on up to `threads` threads, each taking
/// the next index until none is left (so a long item does not hold up the others' share).
/// With one thread, or one item, on the caller's thread.
pub(crate) fn map_indices<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let threads = threads.min(n);
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let results: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = results.get(i) else { break };
                    let value = f(i);
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
                }
            });
        }
    });
    // Every index was taken by a thread that ran to its end (a panic would have propagated
    // out of the scope), so every slot holds its value.
    results
        .into_iter()
        .filter_map(|slot| slot.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_their_indices() {
        for threads in [0, 1, 2, 5] {
            let squares = map_indices(100, threads, |i| i * i);
            assert_eq!(squares, (0..100).map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(map_indices(0, 4, |i| i).is_empty());
    }
}
