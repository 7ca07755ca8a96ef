//! Splitting one operation's work over the CPU's cores (rayon's pool), and the raw output
//! pointer that tasks writing disjoint parts of one buffer share.

use rayon::prelude::*;

/// Run `f(task)` for every task in `0..tasks`, spread over the thread pool.
pub fn for_each_task<F: Fn(usize) + Sync + Send>(tasks: usize, f: F) {
    if tasks <= 1 || rayon::current_num_threads() <= 1 {
        (0..tasks).for_each(f);
    } else {
        (0..tasks).into_par_iter().for_each(f);
    }
}

/// A pointer into an output buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub struct SyncPtr<T>(pub *mut T);

// SAFETY: only used for buffers whose parts are written by one task each, while the
// buffer is borrowed mutably by the caller of `for_each_task`.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}
