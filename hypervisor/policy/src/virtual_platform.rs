//! What a write to one of the partition's virtual platform ports asks for (the ports its
//! ACPI FADT names: tessera_abi::virtual_platform).

use tessera_abi::virtual_platform::{
    RESET_PORT, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT,
};

/// A request a partition makes through its virtual platform ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformRequest {
    /// SLP_EN with SLP_TYP = S5 in the sleep control register (ACPI 6.5 §4.8.3.7: bits 4:2
    /// SLP_TYP, bit 5 SLP_EN): the partition powers itself off.
    PowerOff,
    /// RESET_VALUE to the reset register (ACPI 6.5 §4.8.3.6), or any write with the CPU-reset
    /// bit (bit 2) to port 0xCF9 as chipsets decode it: the partition reboots.
    Reset,
}

/// Classifies an OUT of `size` bytes of `value` to `port`; None for anything else.
pub fn classify_write(port: u16, value: u32, size: u8) -> Option<PlatformRequest> {
    let byte = value as u8;
    match (port, size) {
        (SLEEP_CONTROL_PORT, 1) => {
            let sleep_enable = byte & (1 << 5) != 0;
            let sleep_type = (byte >> 2) & 0b111;
            (sleep_enable && sleep_type == S5_SLEEP_TYPE).then_some(PlatformRequest::PowerOff)
        }
        (RESET_PORT, 1) if byte == RESET_VALUE || byte & (1 << 2) != 0 => {
            Some(PlatformRequest::Reset)
        }
        _ => None,
    }
}

/// The value an IN from a virtual platform port reads, if it is one.
pub fn read(port: u16, size: u8) -> Option<u32> {
    match (port, size) {
        // WAK_STS set: a guest that polls for wake-up after a sleep request sees it at once.
        (SLEEP_STATUS_PORT, 1) => Some(0x80),
        (SLEEP_CONTROL_PORT, 1) => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_control_powers_off_only_for_s5_with_sleep_enable() {
        let s5 = u32::from(S5_SLEEP_TYPE) << 2;
        assert_eq!(
            classify_write(SLEEP_CONTROL_PORT, s5 | 0x20, 1),
            Some(PlatformRequest::PowerOff)
        );
        assert_eq!(classify_write(SLEEP_CONTROL_PORT, s5, 1), None);
        assert_eq!(classify_write(SLEEP_CONTROL_PORT, (3 << 2) | 0x20, 1), None);
        assert_eq!(classify_write(SLEEP_CONTROL_PORT, s5 | 0x20, 2), None);
    }

    #[test]
    fn reset_register() {
        assert_eq!(
            classify_write(RESET_PORT, u32::from(RESET_VALUE), 1),
            Some(PlatformRequest::Reset)
        );
        assert_eq!(
            classify_write(RESET_PORT, 0x0E, 1),
            Some(PlatformRequest::Reset)
        );
        assert_eq!(classify_write(RESET_PORT, 0x02, 1), None);
        assert_eq!(classify_write(0x64, 0xFE, 1), None);
    }

    #[test]
    fn status_reads() {
        assert_eq!(read(SLEEP_STATUS_PORT, 1), Some(0x80));
        assert_eq!(read(0x60, 1), None);
    }
}
