//! The backends' background threads (Parquet flush and compaction, DuckDB apply, Delta
//! maintenance): each runs a pass every tick, or sooner when woken, until its store is dropped,
//! which stops and joins it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

/// Wakes a backend's background thread early (appends crossed a threshold) and stops it.
#[derive(Default)]
pub(crate) struct Background {
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Default)]
struct Signal {
    stop: bool,
    work: bool,
}

impl Background {
    /// Runs `pass` every `tick`, or sooner when woken, until stopped.
    pub(crate) fn run(&self, tick: Duration, mut pass: impl FnMut()) {
        loop {
            {
                let mut signal = self.signal.lock();
                if !signal.stop && !signal.work {
                    self.wake.wait_for(&mut signal, tick);
                }
                if signal.stop {
                    return;
                }
                signal.work = false;
            }
            pass();
        }
    }

    pub(crate) fn wake(&self) {
        self.signal.lock().work = true;
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.signal.lock().stop = true;
        self.wake.notify_all();
    }
}

/// A thread running `work` on an `owner` whose [`Background`] `signal` reaches it; stopped
/// and joined when dropped.
pub(crate) struct BackgroundThread<T: Send + Sync + 'static> {
    name: &'static str,
    owner: Arc<T>,
    signal: fn(&T) -> &Background,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> BackgroundThread<T> {
    pub(crate) fn spawn(
        name: &'static str,
        owner: &Arc<T>,
        signal: fn(&T) -> &Background,
        work: fn(&T),
    ) -> Result<Self> {
        let running = Arc::clone(owner);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(&running))
            .map_err(Error::io(format!("starting the {name} thread")))?;
        Ok(BackgroundThread {
            name,
            owner: Arc::clone(owner),
            signal,
            thread: Some(thread),
        })
    }
}

impl<T: Send + Sync + 'static> Drop for BackgroundThread<T> {
    fn drop(&mut self) {
        (self.signal)(&self.owner).stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(thread = self.name, "a background thread panicked");
            }
        }
    }
}
