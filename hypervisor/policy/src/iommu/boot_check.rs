//! The boot-time check of the firmware's IOMMU units against the table
//! (docs/pci-iommu.md, "Discovery at boot", step 5): every unit the firmware describes
//! (a VT-d DRHD, an AMD-Vi IVHD block) must be one of the table's `platform.iommu`
//! windows and every window a unit, and every confined function must be in a unit's
//! device scope. Pure: the hypervisor passes the units' register bases and a coverage
//! test built from the DMAR or IVRS reader.

use tessera_abi::table::Range;

/// Where the firmware and the table disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disagreement {
    /// The firmware has a unit at `base`, which no table window starts at.
    UnitNotInTable { base: u64 },
    /// The table declares a window at `base`, and the firmware has no unit there.
    WindowWithoutUnit { base: u64 },
}

/// Checks the firmware units' register bases against the table's windows, both ways (a
/// unit matches a window when its base is the window's base). The first disagreement,
/// firmware units first.
pub fn match_units(unit_bases: &[u64], windows: &[Range]) -> Result<(), Disagreement> {
    if let Some(&base) = unit_bases
        .iter()
        .find(|&&base| !windows.iter().any(|window| window.base == base))
    {
        return Err(Disagreement::UnitNotInTable { base });
    }
    match windows
        .iter()
        .find(|window| !unit_bases.contains(&window.base))
    {
        Some(window) => Err(Disagreement::WindowWithoutUnit { base: window.base }),
        None => Ok(()),
    }
}

/// Whether the check applies at all: a table that declares no IOMMU window and confines
/// no function does not depend on an IOMMU (the unit, if the firmware has one, is still
/// enabled with every requester blocked).
pub fn applies(windows: &[Range], confined_functions: usize) -> bool {
    !windows.is_empty() || confined_functions > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: u64 = 0xfed8_0000;
    const INTEL: u64 = 0xfed9_0000;

    #[test]
    fn units_and_windows_must_agree_both_ways() {
        let amd = [Range::new(AMD, 0x4000)];
        let both = [Range::new(AMD, 0x4000), Range::new(INTEL, 0x1000)];
        assert_eq!(match_units(&[AMD], &amd), Ok(()));
        assert_eq!(match_units(&[INTEL, AMD], &both), Ok(()));
        assert_eq!(
            match_units(&[INTEL], &amd),
            Err(Disagreement::UnitNotInTable { base: INTEL })
        );
        assert_eq!(
            match_units(&[AMD], &both),
            Err(Disagreement::WindowWithoutUnit { base: INTEL })
        );
        assert_eq!(
            match_units(&[], &amd),
            Err(Disagreement::WindowWithoutUnit { base: AMD })
        );
        assert_eq!(
            match_units(&[AMD], &[]),
            Err(Disagreement::UnitNotInTable { base: AMD })
        );
        // A window that merely contains the unit's registers is not the unit's window.
        assert_eq!(
            match_units(&[AMD + 0x1000], &amd),
            Err(Disagreement::UnitNotInTable { base: AMD + 0x1000 })
        );
    }

    #[test]
    fn tables_without_iommu_or_confined_functions_are_not_checked() {
        assert!(!applies(&[], 0));
        assert!(applies(&[], 1));
        assert!(applies(&[Range::new(AMD, 0x4000)], 0));
    }
}
