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
use std::sync::{Arc, Weak};

use duckdb::{Connection, InterruptHandle};
use parking_lot::Mutex;

#[derive(Default)]
struct State {
    cancelled: AtomicBool,
    /// The interrupt handle of the connection the work holds, while it holds one.
    running: Mutex<Option<Arc<InterruptHandle>>>,
    /// Tokens cancelled with this one ([`Cancellation::child`]).
    children: Mutex<Vec<Weak<State>>>,
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

    /// Cancels: waits for a connection end, and the query running now is interrupted; the
    /// same for every child.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
        if let Some(handle) = self.0.running.lock().as_ref() {
            handle.interrupt();
        }
        let children = std::mem::take(&mut *self.0.children.lock());
        for child in children.iter().filter_map(Weak::upgrade) {
            Cancellation(child).cancel();
        }
    }

    /// A token cancelled when this one is, which can also be cancelled alone: for work a
    /// request starts and may stop for reasons of its own, without the request counting as
    /// cancelled (the API layer takes a cancelled request for a client gone away, and tells
    /// it nothing).
    pub(crate) fn child(&self) -> Cancellation {
        let child = Cancellation::default();
        let mut children = self.0.children.lock();
        // Under the lock `cancel` takes the children with, after it sets the flag: a child
        // made while the parent is being cancelled is either taken or sees the flag.
        if self.is_cancelled() {
            child.cancel();
        }
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child.0));
        child
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_cancelled_with_its_parent_and_alone_without_it() {
        let parent = Cancellation::default();
        let alone = parent.child();
        alone.cancel();
        assert!(alone.is_cancelled());
        assert!(
            !parent.is_cancelled(),
            "a child's cancellation stays its own"
        );
        let with_parent = parent.child();
        parent.cancel();
        assert!(with_parent.is_cancelled());
        assert!(
            parent.child().is_cancelled(),
            "made after the parent was cancelled"
        );
    }
}
