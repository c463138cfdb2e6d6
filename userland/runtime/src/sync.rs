//! A spin lock that also masks interrupts on the core holding it, for state shared
//! between cores and with interrupt handlers (the console ring, the IOAPIC select
//! register).
//!
//! Masking interrupts while the lock is held is what keeps an interrupt handler on the
//! same core from spinning on a lock its own interrupted code holds.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::processor;

/// Guards a `T`; see the module comment.
pub struct InterruptSafeLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to the value to one holder at a time (the `locked`
// flag, taken with Acquire and released with Release), so sharing the lock between
// cores is sound whenever the value itself may move between them.
unsafe impl<T: Send> Sync for InterruptSafeLock<T> {}

impl<T> InterruptSafeLock<T> {
    pub const fn new(value: T) -> InterruptSafeLock<T> {
        InterruptSafeLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Masks interrupts on this core and spins until the lock is free.
    pub fn lock(&self) -> InterruptSafeGuard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock_for(u32::MAX) {
                return guard;
            }
        }
    }

    /// Like [`lock`](Self::lock), but gives up after `attempts` tries (for paths that
    /// must not hang, such as reporting a fault that happened while the lock was held).
    pub fn try_lock_for(&self, attempts: u32) -> Option<InterruptSafeGuard<'_, T>> {
        let interrupts_were_enabled = processor::interrupts_enabled();
        processor::disable_interrupts();
        for _ in 0..attempts {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(InterruptSafeGuard {
                    lock: self,
                    interrupts_were_enabled,
                });
            }
            core::hint::spin_loop();
        }
        if interrupts_were_enabled {
            processor::enable_interrupts();
        }
        None
    }
}

/// Access to the locked value; unlocks, and restores the interrupt flag, when dropped.
pub struct InterruptSafeGuard<'a, T> {
    lock: &'a InterruptSafeLock<T>,
    interrupts_were_enabled: bool,
}

impl<T> Deref for InterruptSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this holder owns the lock, so no other
        // reference to the value is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for InterruptSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only access through
        // the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for InterruptSafeGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        if self.interrupts_were_enabled {
            processor::enable_interrupts();
        }
    }
}
