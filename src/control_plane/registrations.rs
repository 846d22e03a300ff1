//! What the heartbeat loop tells the node channel: each new registration (node ID and token) and
//! each accepted heartbeat. The loop only stores and wakes (a short lock, no allocation per
//! heartbeat): it never waits on the channel. The channel awaits changes from its own thread.
//!
//! Built on std alone (a mutex and the wakers of whoever awaits), so the loop's side costs nothing
//! in a build without the channel.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use super::protocol::Registration;

/// Shared by the heartbeat loop (which publishes) and the node channel (which awaits).
#[derive(Clone, Default)]
pub struct Registrations {
    shared: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    current: Option<Registration>,
    /// 1 for the first registration, one more for each after it.
    number: u64,
    /// Heartbeats accepted since the agent started, over every registration.
    heartbeats_accepted: u64,
    registration_waiters: Vec<Waker>,
    /// Kept apart so that a heartbeat wakes only a channel waiting for one, not one that waits
    /// for a new registration (as an open channel does): no wake-up per heartbeat.
    heartbeat_waiters: Vec<Waker>,
}

/// A registration and its number (1 for the first, one more for each after it).
#[derive(Clone, Debug)]
pub struct Numbered {
    pub number: u64,
    pub registration: Registration,
}

impl Registrations {
    pub fn new() -> Registrations {
        Registrations::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent state.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The heartbeat loop registered: the channel reopens with this node ID and token.
    pub fn published(&self, registration: &Registration) {
        let mut state = self.lock();
        state.current = Some(registration.clone());
        state.number += 1;
        let waiters = std::mem::take(&mut state.registration_waiters);
        drop(state);
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The control plane accepted a heartbeat: it knows this node and its token.
    pub fn heartbeat_accepted(&self) {
        let mut state = self.lock();
        state.heartbeats_accepted += 1;
        if state.heartbeat_waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut state.heartbeat_waiters);
        drop(state);
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The newest registration, if any.
    pub fn latest(&self) -> Option<Numbered> {
        let state = self.lock();
        state.current.clone().map(|registration| Numbered {
            number: state.number,
            registration,
        })
    }

    /// The number of the newest registration (0 before the first).
    pub fn number(&self) -> u64 {
        self.lock().number
    }

    /// Heartbeats accepted so far.
    pub fn heartbeats_accepted(&self) -> u64 {
        self.lock().heartbeats_accepted
    }

    /// The first registration numbered above `after`, when it comes.
    pub async fn newer_than(&self, after: u64) -> Numbered {
        poll_fn(|context| {
            let mut state = self.lock();
            if state.number > after
                && let Some(registration) = state.current.clone()
            {
                return Poll::Ready(Numbered {
                    number: state.number,
                    registration,
                });
            }
            register(&mut state.registration_waiters, context.waker());
            Poll::Pending
        })
        .await
    }

    /// Returns when more than `seen` heartbeats have been accepted.
    pub async fn heartbeat_accepted_after(&self, seen: u64) {
        poll_fn(|context| {
            let mut state = self.lock();
            if state.heartbeats_accepted > seen {
                return Poll::Ready(());
            }
            register(&mut state.heartbeat_waiters, context.waker());
            Poll::Pending
        })
        .await
    }
}

/// Adds `waker` unless the same task already waits (a future polled again must not grow the list).
fn register(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Registrations")
            .field("current", &state.current)
            .field("number", &state.number)
            .field("heartbeats_accepted", &state.heartbeats_accepted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::protocol::parse_registration;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn registration(id: &str) -> Registration {
        parse_registration(&format!(
            r#"{{"node_id":"{id}","node_token":"secret-token"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_waiter_for_a_registration_is_woken_by_one_and_not_by_heartbeats() {
        let registrations = Registrations::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let mut waiting = Box::pin(registrations.newer_than(0));
        assert!(waiting.as_mut().poll(&mut context).is_pending());
        assert!(waiting.as_mut().poll(&mut context).is_pending());

        registrations.heartbeat_accepted();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);

        registrations.published(&registration("n1"));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(numbered) = waiting.as_mut().poll(&mut context) else {
            panic!("not ready after a registration")
        };
        assert_eq!(
            (numbered.number, numbered.registration.node_id.as_str()),
            (1, "n1")
        );
    }

    #[test]
    fn a_waiter_for_a_heartbeat_is_woken_by_one() {
        let registrations = Registrations::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let seen = registrations.heartbeats_accepted();
        let mut waiting = Box::pin(registrations.heartbeat_accepted_after(seen));
        assert!(waiting.as_mut().poll(&mut context).is_pending());
        registrations.heartbeat_accepted();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(waiting.as_mut().poll(&mut context).is_ready());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let registrations = Registrations::new();
        registrations.published(&registration("n1"));
        assert!(!format!("{registrations:?}").contains("secret-token"));
    }
}
