//! An append-only record that tests can wait on: the request log and the channel message log.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Observer<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// Entries in arrival order, with a condition variable so tests can wait for one.
pub(crate) struct Journal<T> {
    entries: Mutex<Vec<T>>,
    grew: Condvar,
    observers: Mutex<Vec<Observer<T>>>,
}

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Journal {
            entries: Mutex::default(),
            grew: Condvar::new(),
            observers: Mutex::default(),
        }
    }
}

impl<T: Clone> Journal<T> {
    pub fn push(&self, entry: T) {
        let observers = self.observers.lock().unwrap().clone();
        if observers.is_empty() {
            self.entries.lock().unwrap().push(entry);
            self.grew.notify_all();
            return;
        }
        self.entries.lock().unwrap().push(entry.clone());
        self.grew.notify_all();
        // Observers run outside the locks so that one may call back into the server.
        for observe in &observers {
            observe(&entry);
        }
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.entries.lock().unwrap().clone()
    }

    pub fn observe(&self, f: Observer<T>) {
        self.observers.lock().unwrap().push(f);
    }

    /// Evaluates `pred` on a snapshot each time the journal grows (and every 50 ms, in case
    /// `pred` looks at more than the journal), outside the lock so it may call back into the
    /// server. The snapshot is extended, not copied anew: entries are only ever appended.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[T]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut snapshot = Vec::new();
        loop {
            {
                let entries = self.entries.lock().unwrap();
                snapshot.extend_from_slice(&entries[snapshot.len()..]);
            }
            if pred(&snapshot) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let entries = self.entries.lock().unwrap();
            if entries.len() == snapshot.len() {
                let wait = (deadline - now).min(Duration::from_millis(50));
                drop(self.grew.wait_timeout(entries, wait).unwrap());
            }
        }
    }
}
