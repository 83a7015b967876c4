//! The loop of strata's background jobs (snapshots, coalescing, gc): a round every interval.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `round` every `interval`, the first time one interval after the start, until `cancel`
/// fires (also while a round runs: it is dropped). A round handles its own errors.
pub async fn every<F, Fut>(interval: Duration, cancel: &CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = round() => {}
        }
    }
}
