//! NMI blocking kept in software for a guest on SVM, so that no guest can hold off the
//! hypervisor's own NMIs.
//!
//! On AMD processors without vNMI, an NMI injected through EVENTINJ with type NMI sets the
//! processor's real NMI mask, which only the guest's IRET clears (AMD APM Vol. 2 15.20,
//! 15.21.4). Physical NMIs — the hypervisor's stop and restart signals — then stay pending
//! for as long as the guest's NMI handler does not return: a guest that never returns makes
//! its core deaf. Tessera therefore never injects an NMI-type event on SVM. A guest's NMI is
//! delivered as an external-interrupt event (EVENTINJ type 0) with vector 2: the processor
//! runs the guest's IDT entry 2 exactly as for an NMI (interrupt gate, its IST stack), but
//! does not touch the NMI mask. What the mask did for the guest — no second NMI until the
//! handler's IRET — is kept here:
//!
//! * an NMI for a guest that is not blocked is injected at once and blocks;
//! * one arriving while blocked is held (NMIs do not queue: one pending at most, Intel SDM
//!   Vol. 3A 6.7.1);
//! * the IRET intercept ends the blocking. It fires before the IRET executes, so a held
//!   NMI would be delivered on top of the returning handler's frame; instead the backend
//!   single-steps the IRET (RFLAGS.TF, whose trap comes after the instruction that starts
//!   with it set, SDM Vol. 3B 17.3.1.4) and injects the held NMI at the #DB intercept,
//!   after the IRET — the order hardware gives (KVM does the same on SVM).
//!
//! The physical NMI mask is never set by a guest's doing, so every hypervisor NMI exits.

/// What the backend does with a guest NMI it was asked to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Inject vector 2 as an external interrupt now, and intercept IRET.
    InjectNow,
    /// The guest is in its NMI handler: the NMI is held until its IRET.
    Held,
}

/// What the backend does at an IRET intercept (before the IRET executes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtIret {
    /// Blocking ends with this IRET and nothing is held: stop intercepting IRET.
    Unblocked,
    /// An NMI is held: stop intercepting IRET, set RFLAGS.TF so that a #DB intercept follows
    /// the IRET, and keep DR6 to restore it then.
    StepOver,
}

/// What a #DB intercept was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugTrap {
    /// The guest's own #DB: reflect it.
    Guest,
    /// The single step over the IRET. Without `also_guest_trap`: restore DR6 and inject the
    /// held NMI (it blocks again: intercept IRET). With it (the guest itself had TF set when
    /// its IRET began, so the trap is its own too): reflect the #DB, and bring the core back
    /// right after its delivery (a self-NMI) to deliver the NMI, which stays owed.
    AfterIret { also_guest_trap: bool },
}

/// One vCPU's software NMI blocking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NmiBlocking {
    /// An NMI was delivered and its handler has not executed an IRET yet.
    blocked: bool,
    /// An NMI arrived while blocked.
    held: bool,
    /// Single-stepping the IRET; the guest's own RFLAGS.TF when it began.
    stepping: Option<bool>,
}

impl NmiBlocking {
    pub const fn new() -> Self {
        Self {
            blocked: false,
            held: false,
            stepping: None,
        }
    }

    /// A guest NMI is to be delivered.
    pub fn deliver(&mut self) -> Delivery {
        if self.blocked {
            self.held = true;
            Delivery::Held
        } else {
            // An owed NMI (see `debug_trap`) is this one: NMIs do not queue.
            self.held = false;
            self.blocked = true;
            Delivery::InjectNow
        }
    }

    /// The guest reached an IRET while IRET was intercepted; `guest_trap_flag` is its
    /// RFLAGS.TF at that point.
    pub fn at_iret(&mut self, guest_trap_flag: bool) -> AtIret {
        if self.held && self.stepping.is_none() {
            self.stepping = Some(guest_trap_flag);
            AtIret::StepOver
        } else {
            self.blocked = false;
            AtIret::Unblocked
        }
    }

    /// A #DB intercept. After the step over the IRET, the held NMI is delivered (and blocks
    /// again).
    pub fn debug_trap(&mut self) -> DebugTrap {
        match self.stepping.take() {
            // The common case: the held NMI is delivered now and blocks again.
            Some(false) => {
                self.held = false;
                self.blocked = true;
                DebugTrap::AfterIret {
                    also_guest_trap: false,
                }
            }
            // The guest's own single-step trap comes first (a trap of the previous
            // instruction outranks an NMI, SDM Vol. 3A 6.9): the NMI stays owed, unblocked,
            // for the backend to deliver at the next instruction boundary.
            Some(true) => {
                self.blocked = false;
                DebugTrap::AfterIret {
                    also_guest_trap: true,
                }
            }
            None => DebugTrap::Guest,
        }
    }

    /// Whether IRET must be intercepted before the next entry: while blocked, and not while
    /// the IRET is being stepped over.
    pub fn intercept_iret(&self) -> bool {
        self.blocked && self.stepping.is_none()
    }

    /// Whether the guest is inside its NMI handler, as the processor would see it.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// A vCPU reset (a partition's start or restart): the new start begins with NMIs
    /// unblocked and nothing held, as after power-on.
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_nmi_is_injected_and_blocks_until_iret() {
        let mut nmi = NmiBlocking::new();
        assert_eq!(nmi.deliver(), Delivery::InjectNow);
        assert!(nmi.blocked() && nmi.intercept_iret());
        assert_eq!(nmi.at_iret(false), AtIret::Unblocked);
        assert!(!nmi.blocked() && !nmi.intercept_iret());
        assert_eq!(nmi.deliver(), Delivery::InjectNow);
    }

    #[test]
    fn nmis_while_blocked_are_held_as_one_and_delivered_after_the_iret() {
        let mut nmi = NmiBlocking::new();
        assert_eq!(nmi.deliver(), Delivery::InjectNow);
        assert_eq!(nmi.deliver(), Delivery::Held);
        assert_eq!(nmi.deliver(), Delivery::Held);
        assert_eq!(nmi.at_iret(false), AtIret::StepOver);
        // While stepping, IRET is not intercepted (the step itself must execute it).
        assert!(!nmi.intercept_iret());
        assert_eq!(
            nmi.debug_trap(),
            DebugTrap::AfterIret {
                also_guest_trap: false
            }
        );
        // The held NMI is now in its handler: blocked again, nothing more held.
        assert!(nmi.blocked() && nmi.intercept_iret());
        assert_eq!(nmi.at_iret(false), AtIret::Unblocked);
        assert_eq!(nmi.debug_trap(), DebugTrap::Guest);
    }

    #[test]
    fn a_guest_single_stepping_its_iret_gets_its_own_trap_first() {
        let mut nmi = NmiBlocking::new();
        nmi.deliver();
        nmi.deliver();
        assert_eq!(nmi.at_iret(true), AtIret::StepOver);
        assert_eq!(
            nmi.debug_trap(),
            DebugTrap::AfterIret {
                also_guest_trap: true
            }
        );
        // Unblocked with the NMI still owed: the next delivery injects it (once).
        assert!(!nmi.blocked() && !nmi.intercept_iret());
        assert_eq!(nmi.deliver(), Delivery::InjectNow);
        assert_eq!(nmi.at_iret(false), AtIret::Unblocked);
    }

    #[test]
    fn debug_traps_without_a_step_are_the_guests() {
        let mut nmi = NmiBlocking::new();
        assert_eq!(nmi.debug_trap(), DebugTrap::Guest);
        nmi.deliver();
        assert_eq!(nmi.debug_trap(), DebugTrap::Guest);
        assert!(nmi.blocked());
    }

    #[test]
    fn reset_forgets_everything() {
        let mut nmi = NmiBlocking::new();
        nmi.deliver();
        nmi.deliver();
        nmi.at_iret(false);
        nmi.reset();
        assert_eq!(nmi, NmiBlocking::new());
    }

    #[derive(Clone, Copy, Debug)]
    enum Event {
        Nmi,
        Iret(bool),
        Debug,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Nmi),
            any::<bool>().prop_map(Event::Iret),
            Just(Event::Debug)
        ]
    }

    proptest! {
        /// Against a model of the processor's NMI mask: never two NMIs in the handler at
        /// once, never an NMI lost while one is held, and every injection happens while the
        /// model says NMIs are unblocked.
        #[test]
        fn never_nests_and_never_loses_a_held_nmi(events in proptest::collection::vec(event(), 0..64)) {
            let mut nmi = NmiBlocking::new();
            let mut in_handler = 0u32;
            let mut pending = false;
            let mut stepping = false;
            for event in events {
                match event {
                    Event::Nmi => match nmi.deliver() {
                        Delivery::InjectNow => {
                            prop_assert_eq!(in_handler, 0);
                            prop_assert!(!stepping);
                            in_handler += 1;
                            pending = false;
                        }
                        Delivery::Held => {
                            prop_assert!(in_handler == 1 || stepping);
                            pending = true;
                        }
                    },
                    // The guest can only reach an intercepted IRET.
                    Event::Iret(trap_flag) if nmi.intercept_iret() => match nmi.at_iret(trap_flag) {
                        AtIret::Unblocked => {
                            prop_assert!(!pending);
                            in_handler = 0;
                        }
                        AtIret::StepOver => {
                            prop_assert!(pending);
                            in_handler = 0;
                            stepping = true;
                        }
                    },
                    Event::Iret(_) => {}
                    Event::Debug => match nmi.debug_trap() {
                        DebugTrap::AfterIret { also_guest_trap } => {
                            prop_assert!(stepping && pending);
                            stepping = false;
                            if !also_guest_trap {
                                pending = false;
                                in_handler = 1;
                            }
                        }
                        DebugTrap::Guest => prop_assert!(!stepping),
                    },
                }
                prop_assert_eq!(nmi.blocked(), in_handler == 1 || stepping);
            }
        }
    }
}
