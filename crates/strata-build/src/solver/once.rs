//! One run per step key in this process: when two builds (the targets of
//! `strata bake`, or two stages of one build) reach the same cache key at
//! the same time, the first claims it and runs the step; the others wait
//! for the claim to end and then find the cache entry it recorded, so a
//! base stage shared by several targets builds once.
//!
//! The claim is taken just before a step's cache lookup and held until the
//! step's cache entry is stored (or the step failed, when the next waiter
//! runs it itself). A claimed step never waits for another claim, so
//! claims cannot deadlock.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

struct Gate {
    running: Mutex<HashSet<String>>,
    released: Condvar,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate {
        running: Mutex::new(HashSet::new()),
        released: Condvar::new(),
    })
}

/// The right to look up and, on a miss, run the step with this key;
/// released on drop.
pub(crate) struct Claim {
    key: String,
}

/// Waits until no other thread holds `key`, then holds it.
pub(crate) fn claim(key: &str) -> Claim {
    let g = gate();
    let mut running = g.running.lock().unwrap_or_else(PoisonError::into_inner);
    while running.contains(key) {
        running = g
            .released
            .wait(running)
            .unwrap_or_else(PoisonError::into_inner);
    }
    running.insert(key.to_owned());
    Claim {
        key: key.to_owned(),
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let g = gate();
        g.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        g.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::claim;

    /// Four threads reach the same key; a "cache" filled by the first one
    /// means exactly one of them runs the step, and nobody runs it while
    /// another is inside.
    #[test]
    fn one_runs_the_others_wait_then_hit() {
        let cache = Arc::new(std::sync::Mutex::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cache, ran, inside) = (cache.clone(), ran.clone(), inside.clone());
                std::thread::spawn(move || {
                    let _c = claim("once-test-key");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    let hit = *cache.lock().unwrap_or_else(|e| e.into_inner());
                    if !hit {
                        std::thread::sleep(Duration::from_millis(50));
                        ran.fetch_add(1, Ordering::SeqCst);
                        *cache.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn different_keys_do_not_wait() {
        let a = claim("once-test-a");
        let b = claim("once-test-b");
        drop((a, b));
    }
}
