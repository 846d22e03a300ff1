//! Several engine calls at once in one task: the services of a wave, the inspects of a
//! listing. The engine serves each call on its own connection; the agent waits for the
//! slowest instead of the sum.

use std::future::{self, Future};
use std::pin::Pin;
use std::task::Poll;

/// Runs `futures` together in this task; their outputs in the same order. A plain join: each
/// wake polls those not yet done (the callers pass a handful).
pub async fn side_by_side<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(done) => *output = Some(done),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("polled to the end"))
        .collect()
}
