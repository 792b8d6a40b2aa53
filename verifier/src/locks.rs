//! Locks on memory that threads share, and the servers' one policy for a poisoned lock (the
//! log server and the witness both use it). The data directory's lock file is in
//! [`crate::keyfile`].
//!
//! A lock is poisoned when a thread panicked while holding it, perhaps halfway through a
//! change to what it guards. Nothing tells a half-made change from a whole one, so the process
//! stops: it logs "a lock was poisoned by a panic; stopping" with the place of the lock and
//! aborts, and its supervisor restarts it from what is durable on disk. Going on would answer
//! from state that may be wrong (a builder registry read as empty refuses every builder)
//! with no word why. `docs/architecture.md`, "Locks", gives the reasons.

use std::panic::Location;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, stopping the process if it is poisoned.
#[track_caller]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(_) => stop(Location::caller()),
    }
}

/// Takes `l` for reading, stopping the process if it is poisoned.
#[track_caller]
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(guard) => guard,
        Err(_) => stop(Location::caller()),
    }
}

/// Takes `l` for writing, stopping the process if it is poisoned.
#[track_caller]
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(guard) => guard,
        Err(_) => stop(Location::caller()),
    }
}

#[cold]
fn stop(at: &Location<'_>) -> ! {
    // Straight to stderr: the process is about to abort, and its logger may hold a lock too.
    eprintln!("error: a lock was poisoned by a panic; stopping (lock at {at})");
    std::process::abort()
}
