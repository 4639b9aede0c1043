//! Cancellation of a request's storage work: when the client goes away or stops reading, its
//! work must give its connection back at once, not run on (or wait for a connection) first.
//!
//! The API layer runs a request's blocking work inside [`Cancellation::scope`]; the connection
//! pool, deep below, finds the token there. Waiting for a connection ends with
//! [`Error::Cancelled`](crate::Error::Cancelled), and a query running on a connection taken in
//! the scope is interrupted (DuckDB's `interrupt`). A thread-local keeps the token out of every
//! storage signature between the two.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use duckdb::{Connection, InterruptHandle};
use parking_lot::Mutex;

#[derive(Default)]
struct State {
    cancelled: AtomicBool,
    /// The interrupt handle of the connection the work holds, while it holds one.
    running: Mutex<Option<Arc<InterruptHandle>>>,
}

/// A request's cancellation token; clones share it.
#[derive(Clone, Default)]
pub struct Cancellation(Arc<State>);

thread_local! {
    static CURRENT: RefCell<Option<Cancellation>> = const { RefCell::new(None) };
}

/// The token of the scope the calling thread runs in, if any.
pub(crate) fn current() -> Option<Cancellation> {
    CURRENT.with(|current| current.borrow().clone())
}

impl Cancellation {
    /// Runs `work` with this token as the thread's current one.
    pub fn scope<T>(&self, work: impl FnOnce() -> T) -> T {
        struct Restore(Option<Cancellation>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(CURRENT.with(|current| current.borrow_mut().replace(self.clone())));
        work()
    }

    /// Cancels: waits for a connection end, and the query running now is interrupted.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
        if let Some(handle) = self.0.running.lock().as_ref() {
            handle.interrupt();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Registers `conn` as the connection this request's work runs on, until the returned
    /// guard drops. Cancelled already: the connection is interrupted at once.
    pub(crate) fn running(&self, conn: &Connection) -> Running {
        let handle = conn.interrupt_handle();
        let mut running = self.0.running.lock();
        if self.is_cancelled() {
            handle.interrupt();
        }
        *running = Some(handle);
        drop(running);
        Running(self.clone())
    }
}

/// A connection registered with a [`Cancellation`]; unregisters it on drop, under the same
/// lock `cancel` interrupts under, so no interrupt reaches the connection once it is returned.
pub(crate) struct Running(Cancellation);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0 .0.running.lock() = None;
    }
}
