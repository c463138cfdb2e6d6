//! The hypervisor console lines that the runner and the system tests rely on.
//!
//! The hypervisor prints these on its console UART (the table's `hypervisor.console`), one
//! per line, exactly as written here; change both sides together. Only the hypervisor's
//! console stream is searched for them, so a guest cannot fake one.
//!
//! | marker        | line                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | boot banner   | starts with `Tessera`, contains `backend=svm` or `backend=vmx`     |
//! | panic         | starts with `PANIC:`                                              |
//! | refusal       | starts with `REFUSED:` (the machine cannot run the table)         |
//! | containment   | contains `contained: partition=<name> ` then `core=… reason=… address=…` |
//! | stop          | contains `stopped: partition=<name> status=<n>`                   |
//! | power-off     | contains `power-off: requested by <name>`                         |
//! | exit counters | starts with `exits: partition=<name>` (printed at power-off)      |
//! | switching off | is `Tessera: power off` (the last line before the ACPI power-off)  |
//! | machine reset | is `Tessera: machine reset` (the last line before a health action resets the machine) |
//! | core started  | contains `started: partition=<name> core=<apic id> ` (first instruction) |
//! | Multiboot2    | starts with `boot: Multiboot2, ` (booted by Multiboot2, not v1)    |
//!
//! Partition names are `[a-z0-9-]+`, so a name ends at the first whitespace.

/// A hypervisor panic: the rest of the line is the panic message.
pub const PANIC_PREFIX: &str = "PANIC:";
/// The hypervisor refused to start: the machine lacks what the table needs.
pub const REFUSED_PREFIX: &str = "REFUSED:";
/// The boot banner starts with the product name …
pub const BANNER_PREFIX: &str = "Tessera";
/// … and names the virtualization backend chosen from CPUID.
pub const BANNER_BACKEND_SVM: &str = "backend=svm";
/// The Intel backend, see [`BANNER_BACKEND_SVM`].
pub const BANNER_BACKEND_VMX: &str = "backend=vmx";
/// A partition fault was contained; the partition's name follows, then a space and the
/// `core=`, `reason=` and `address=` fields.
pub const CONTAINED: &str = "contained: partition=";
/// A partition stopped itself; the partition's name follows, then ` status=<n>`.
pub const STOPPED: &str = "stopped: partition=";
/// The field after the partition's name in a [`STOPPED`] line.
pub const STOPPED_STATUS: &str = "status=";
/// A partition with the `power` capability powered the machine off; its name follows.
pub const POWER_OFF: &str = "power-off: requested by ";
/// One partition's exit counters, printed at power-off; the partition's name follows.
pub const EXITS_PREFIX: &str = "exits: partition=";
/// The hypervisor's last line: it switches the machine off through ACPI next.
pub const SWITCHING_OFF: &str = "Tessera: power off";
/// The hypervisor's last line before it resets the machine (the health action
/// `machine-reset`).
pub const MACHINE_RESET: &str = "Tessera: machine reset";
/// A core of a partition ran its first guest instruction (at the ELF entry, or at the SIPI
/// vector for a core the partition started); the partition's name follows, then
/// ` core=<apic id> entry=…`.
pub const STARTED: &str = "started: partition=";
/// The hypervisor was booted by Multiboot2 (GRUB's `multiboot2`): `, ACPI RSDP revision …`
/// follows. A Multiboot v1 boot prints no such line.
pub const BOOTED_BY_MULTIBOOT2: &str = "boot: Multiboot2";

/// The virtualization backend the banner names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Svm,
    Vmx,
}

/// A recognised hypervisor console line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    Banner {
        backend: Backend,
    },
    Panic {
        message: String,
    },
    Refused {
        reason: String,
    },
    Contained {
        partition: String,
    },
    Stopped {
        partition: String,
        status: Option<i64>,
    },
    PowerOff {
        requested_by: String,
    },
    Exits {
        partition: String,
    },
    /// The last line before the ACPI power-off ([`SWITCHING_OFF`]).
    SwitchingOff,
    /// The last line before a machine reset ([`MACHINE_RESET`]).
    MachineReset,
}

/// Recognises one hypervisor console line (without its line ending).
pub fn parse(line: &str) -> Option<Marker> {
    let line = line.trim_end();
    if let Some(message) = line.strip_prefix(PANIC_PREFIX) {
        return Some(Marker::Panic {
            message: message.trim().to_string(),
        });
    }
    if let Some(reason) = line.strip_prefix(REFUSED_PREFIX) {
        return Some(Marker::Refused {
            reason: reason.trim().to_string(),
        });
    }
    if line == SWITCHING_OFF {
        return Some(Marker::SwitchingOff);
    }
    if line == MACHINE_RESET {
        return Some(Marker::MachineReset);
    }
    if line.starts_with(BANNER_PREFIX) {
        if line.contains(BANNER_BACKEND_SVM) {
            return Some(Marker::Banner {
                backend: Backend::Svm,
            });
        }
        if line.contains(BANNER_BACKEND_VMX) {
            return Some(Marker::Banner {
                backend: Backend::Vmx,
            });
        }
    }
    if let Some(partition) = line.strip_prefix(EXITS_PREFIX).and_then(first_word) {
        return Some(Marker::Exits { partition });
    }
    if let Some(partition) = after(line, CONTAINED).and_then(first_word) {
        return Some(Marker::Contained { partition });
    }
    if let Some(rest) = after(line, STOPPED) {
        let partition = first_word(rest)?;
        let status = after(rest, STOPPED_STATUS)
            .and_then(first_word)
            .and_then(|status| status.parse().ok());
        return Some(Marker::Stopped { partition, status });
    }
    if let Some(requested_by) = after(line, POWER_OFF).and_then(first_word) {
        return Some(Marker::PowerOff { requested_by });
    }
    None
}

/// The text after the first occurrence of `needle`.
fn after<'a>(line: &'a str, needle: &str) -> Option<&'a str> {
    line.find(needle).map(|start| &line[start + needle.len()..])
}

/// The text up to the first whitespace, if there is any.
fn first_word(text: &str) -> Option<String> {
    text.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_marker() {
        assert_eq!(
            parse("Tessera 0.1.0: 4 cores, backend=svm (NPT)"),
            Some(Marker::Banner {
                backend: Backend::Svm
            })
        );
        assert_eq!(
            parse("Tessera backend=vmx"),
            Some(Marker::Banner {
                backend: Backend::Vmx
            })
        );
        assert_eq!(
            parse("PANIC: at src/virt/svm.rs:12: oops"),
            Some(Marker::Panic {
                message: "at src/virt/svm.rs:12: oops".into()
            })
        );
        assert_eq!(
            parse("contained: partition=intruder core=2 reason=npf address=0x2000000"),
            Some(Marker::Contained {
                partition: "intruder".into()
            })
        );
        assert_eq!(
            parse("stopped: partition=worker status=0"),
            Some(Marker::Stopped {
                partition: "worker".into(),
                status: Some(0)
            })
        );
        assert_eq!(
            parse("power-off: requested by control\r"),
            Some(Marker::PowerOff {
                requested_by: "control".into()
            })
        );
        assert_eq!(
            parse("exits: partition=worker core=1 io=3 msr=0"),
            Some(Marker::Exits {
                partition: "worker".into()
            })
        );
        assert_eq!(parse("Tessera: power off\r"), Some(Marker::SwitchingOff));
        assert_eq!(parse("Tessera: machine reset"), Some(Marker::MachineReset));
    }

    #[test]
    fn ignores_ordinary_lines() {
        assert_eq!(parse("Tessera booting"), None);
        assert_eq!(parse("hello from core 1"), None);
        assert_eq!(parse("  PANIC: indented is not a panic"), None);
        assert_eq!(parse("contained: partition="), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn a_stop_without_a_readable_status_still_counts() {
        assert_eq!(
            parse("stopped: partition=worker status=?"),
            Some(Marker::Stopped {
                partition: "worker".into(),
                status: None
            })
        );
    }
}
