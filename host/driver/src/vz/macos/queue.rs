//! Values that live on one serial dispatch queue.
//!
//! Virtualization.framework objects are not thread-safe: a
//! `VZVirtualMachine` made with `initWithConfiguration:queue:` must only be
//! touched on that queue, which is also where the framework runs its
//! completion handlers and delegate methods. [`OnQueue`] holds such values
//! and hands them out only inside closures running on the queue, so the
//! handle around it can be `Send` and `Sync`.

use std::cell::RefCell;
use std::sync::Arc;

use dispatch2::{DispatchQueue, DispatchRetained};

/// A value reachable only from closures submitted to its serial queue.
pub(super) struct OnQueue<T: 'static> {
    queue: DispatchRetained<DispatchQueue>,
    value: RefCell<Option<T>>,
}

// SAFETY: `value` is only reached through `with`, which first calls
// `dispatch_assert_queue` (a hard check that aborts the process otherwise),
// so it is only ever touched by blocks running on `queue`. That queue is
// serial, so those blocks never overlap, and `Drop` sends a remaining value
// back to the queue instead of releasing it on the dropping thread.
unsafe impl<T: 'static> Send for OnQueue<T> {}
// SAFETY: as for `Send`: shared references give no access off the queue.
unsafe impl<T: 'static> Sync for OnQueue<T> {}

impl<T: 'static> OnQueue<T> {
    /// An empty cell on a new serial queue labelled `label`.
    pub(super) fn new(label: &str) -> Arc<Self> {
        Arc::new(Self {
            // No attributes: a serial queue.
            queue: DispatchQueue::new(label, None),
            value: RefCell::new(None),
        })
    }

    /// Runs `work` on the queue with the value and the queue itself; returns
    /// at once. Answers travel back over channels `work` captures.
    pub(super) fn submit(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Option<T>, &DispatchQueue) + Send + 'static,
    ) {
        let this = Arc::clone(self);
        self.queue.exec_async(move || this.with(work));
    }

    fn with<R>(&self, work: impl FnOnce(&mut Option<T>, &DispatchQueue) -> R) -> R {
        self.queue.assert();
        let mut value = self.value.borrow_mut();
        work(&mut value, &self.queue)
    }
}

impl<T: 'static> Drop for OnQueue<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.get_mut().take() {
            let value = ReleaseOnQueue(value);
            self.queue.exec_async(move || drop(value));
        }
    }
}

/// Carries a queue-bound value to its queue, to be dropped there.
struct ReleaseOnQueue<T>(T);

// SAFETY: the value is moved to the queue it belongs to and only dropped
// there; nothing reads it on the way.
unsafe impl<T> Send for ReleaseOnQueue<T> {}
