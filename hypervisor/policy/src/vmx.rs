//! Intel VMX decisions that need no hardware: fitting the VM-execution controls Tessera
//! wants to what the processor allows, naming what is missing, and decoding VM-instruction
//! error numbers (Intel SDM vol. 3, §25.6–25.8 (controls), appendix A.3–A.5 (capability
//! MSRs), §31.4 (VM-instruction error numbers)).

/// A VMX control word and the capability MSR that constrains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlWord {
    PinBased,
    PrimaryProcessorBased,
    SecondaryProcessorBased,
    Exit,
    Entry,
}

impl ControlWord {
    pub fn name(self) -> &'static str {
        match self {
            ControlWord::PinBased => "pin-based VM-execution controls",
            ControlWord::PrimaryProcessorBased => "primary processor-based VM-execution controls",
            ControlWord::SecondaryProcessorBased => {
                "secondary processor-based VM-execution controls"
            }
            ControlWord::Exit => "VM-exit controls",
            ControlWord::Entry => "VM-entry controls",
        }
    }

    /// The name of one bit of this control word, for messages.
    pub fn bit_name(self, bit: u32) -> &'static str {
        let names: &[(u32, &str)] = match self {
            ControlWord::PinBased => &[
                (0, "external-interrupt exiting"),
                (3, "NMI exiting"),
                (5, "virtual NMIs"),
                (6, "VMX-preemption timer"),
            ],
            ControlWord::PrimaryProcessorBased => &[
                (7, "HLT exiting"),
                (24, "unconditional I/O exiting"),
                (25, "use I/O bitmaps"),
                (28, "use MSR bitmaps"),
                (31, "activate secondary controls"),
            ],
            ControlWord::SecondaryProcessorBased => &[
                (1, "enable EPT"),
                (3, "enable RDTSCP"),
                (5, "enable VPID"),
                (7, "unrestricted guest"),
                (12, "enable INVPCID"),
                (20, "enable XSAVES/XRSTORS"),
            ],
            ControlWord::Exit => &[
                (9, "host address-space size"),
                (18, "save IA32_PAT"),
                (19, "load IA32_PAT"),
                (20, "save IA32_EFER"),
                (21, "load IA32_EFER"),
            ],
            ControlWord::Entry => &[
                (9, "IA-32e mode guest"),
                (14, "load IA32_PAT"),
                (15, "load IA32_EFER"),
            ],
        };
        names
            .iter()
            .find(|(number, _)| *number == bit)
            .map_or("(unnamed control)", |(_, name)| name)
    }
}

/// A control the processor cannot set as Tessera needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingControl {
    pub word: ControlWord,
    pub bit: u32,
    /// True when the control must be 1 and cannot; false when it must be 0 and cannot.
    pub needed_set: bool,
}

/// Fits a control word to its capability MSR (SDM appendix A.3.1): the low 32 bits are the
/// allowed 0-settings (a 1 there forces the control to 1), the high 32 bits the allowed
/// 1-settings (a 0 there forces it to 0). `required` must be 1, `forbidden` must be 0,
/// `wanted` is set where allowed. Returns the value to write, or the first control that
/// cannot be had.
pub fn fit(
    word: ControlWord,
    capability: u64,
    required: u32,
    wanted: u32,
    forbidden: u32,
) -> Result<u32, MissingControl> {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    let cannot_set = required & !may_be_one;
    if cannot_set != 0 {
        return Err(MissingControl {
            word,
            bit: cannot_set.trailing_zeros(),
            needed_set: true,
        });
    }
    let cannot_clear = forbidden & must_be_one;
    if cannot_clear != 0 {
        return Err(MissingControl {
            word,
            bit: cannot_clear.trailing_zeros(),
            needed_set: false,
        });
    }
    Ok((must_be_one | required | (wanted & may_be_one)) & !forbidden)
}

/// The fixed bits of CR0 or CR4 in VMX operation (SDM appendix A.7, A.8): bits set in
/// `fixed0` must be 1, bits clear in `fixed1` must be 0. `relaxed` lists bits exempt from
/// the fixed-1 rule (CR0.PE and CR0.PG for an unrestricted guest, SDM §26.3.1.1).
pub fn apply_fixed_bits(value: u64, fixed0: u64, fixed1: u64, relaxed: u64) -> u64 {
    (value | (fixed0 & !relaxed)) & fixed1
}

/// The VM-instruction error numbers (SDM §31.4, table 31-1).
pub fn instruction_error_name(number: u32) -> &'static str {
    match number {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// An access to CR0, CR3 or CR4 that caused a control-register exit, decoded from the exit
/// qualification (SDM §28.2.1, table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegisterAccess {
    /// MOV to CRn from general-purpose register `register` (0 = RAX … 15 = R15).
    MoveTo {
        control_register: u8,
        register: u8,
    },
    MoveFrom {
        control_register: u8,
        register: u8,
    },
    Clts,
    Lmsw {
        source_data: u16,
    },
}

pub fn decode_control_register_access(qualification: u64) -> ControlRegisterAccess {
    let control_register = (qualification & 0xF) as u8;
    let register = ((qualification >> 8) & 0xF) as u8;
    match (qualification >> 4) & 0b11 {
        0 => ControlRegisterAccess::MoveTo {
            control_register,
            register,
        },
        1 => ControlRegisterAccess::MoveFrom {
            control_register,
            register,
        },
        2 => ControlRegisterAccess::Clts,
        _ => ControlRegisterAccess::Lmsw {
            source_data: (qualification >> 16) as u16,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_respects_allowed_settings() {
        // Allowed 0: bits 1, 2 forced on; allowed 1: bits 0-7 may be on.
        let capability = (0xFFu64 << 32) | 0b110;
        assert_eq!(
            fit(ControlWord::PinBased, capability, 1 << 3, 0, 0),
            Ok(0b1110)
        );
        assert_eq!(
            fit(ControlWord::PinBased, capability, 0, 1 << 4 | 1 << 9, 0),
            Ok(0b1_0110)
        );
        assert_eq!(
            fit(ControlWord::PinBased, capability, 1 << 8, 0, 0),
            Err(MissingControl {
                word: ControlWord::PinBased,
                bit: 8,
                needed_set: true
            })
        );
        assert_eq!(
            fit(ControlWord::PinBased, capability, 0, 0, 1 << 2),
            Err(MissingControl {
                word: ControlWord::PinBased,
                bit: 2,
                needed_set: false
            })
        );
        assert_eq!(
            fit(ControlWord::PinBased, capability, 0, 0, 1 << 0),
            Ok(0b110)
        );
    }

    #[test]
    fn penryn_like_processor_lacks_secondary_controls() {
        // Primary controls whose allowed-1 half has bit 31 clear.
        let capability = (0x7FFF_FFFFu64 << 32) | 0x0401_E172;
        let missing = fit(
            ControlWord::PrimaryProcessorBased,
            capability,
            1 << 31,
            0,
            0,
        )
        .unwrap_err();
        assert_eq!(missing.bit, 31);
        assert_eq!(
            missing.word.bit_name(missing.bit),
            "activate secondary controls"
        );
    }

    #[test]
    fn fixed_bits_with_unrestricted_guest() {
        let fixed0 = 0x8000_0021; // PG, NE, PE
        let fixed1 = 0xFFFF_FFFF;
        assert_eq!(apply_fixed_bits(0x11, fixed0, fixed1, 0x8000_0001), 0x31);
        assert_eq!(apply_fixed_bits(0x11, fixed0, fixed1, 0), 0x8000_0031);
        assert_eq!(apply_fixed_bits(1 << 40, 0, fixed1, 0), 0);
    }

    #[test]
    fn instruction_errors_have_names() {
        assert_eq!(
            instruction_error_name(7),
            "VM entry with invalid control field(s)"
        );
        assert_eq!(
            instruction_error_name(8),
            "VM entry with invalid host-state field(s)"
        );
        assert_eq!(instruction_error_name(99), "unknown VM-instruction error");
    }

    #[test]
    fn control_register_accesses_decode() {
        assert_eq!(
            decode_control_register_access(0x0000_0300),
            ControlRegisterAccess::MoveTo {
                control_register: 0,
                register: 3
            }
        );
        assert_eq!(
            decode_control_register_access(0x0000_0014),
            ControlRegisterAccess::MoveFrom {
                control_register: 4,
                register: 0
            }
        );
        assert_eq!(
            decode_control_register_access(0x20),
            ControlRegisterAccess::Clts
        );
        assert_eq!(
            decode_control_register_access(0x0001_0030),
            ControlRegisterAccess::Lmsw { source_data: 1 }
        );
    }
}
