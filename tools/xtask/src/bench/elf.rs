//! Figures read from the built hypervisor image itself: the bytes it loads, and the code of
//! each virtualization backend (from the ELF symbol table; the release profile keeps it).

use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, SectionIndex, SectionKind, SymbolKind,
};

use crate::markers::Backend;

/// The sum of `p_filesz` over the image's `PT_LOAD` program headers: what the boot loader
/// copies into memory (the image has one).
pub fn loadable_bytes(data: &[u8]) -> Result<u64, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|error| error.to_string())?;
    let endian = file.endian();
    let segments: Vec<u64> = file
        .elf_program_headers()
        .iter()
        .filter(|header| header.p_type(endian) == elf::PT_LOAD)
        .map(|header| header.p_filesz(endian))
        .collect();
    if segments.is_empty() {
        return Err("the image has no PT_LOAD segment".into());
    }
    Ok(segments.iter().sum())
}

/// The assembly entry points of each backend (the VMRUN / VMLAUNCH wrappers).
pub fn assembly_symbols(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Svm => &["svm_run"],
        Backend::Vmx => &["vmx_run", "vmx_exit"],
    }
}

/// The module name of a backend under `virt`.
fn module(backend: Backend) -> &'static str {
    match backend {
        Backend::Svm => "svm",
        Backend::Vmx => "vmx",
    }
}

/// Whether a (mangled) symbol name lies in the backend's module `virt::<module>`: the
/// Itanium-style and v0 manglings write a path segment as `<length><name>` (`4virt3vmx`),
/// legacy mangling writes an impl's self type with `..` separators
/// (`<tessera_hypervisor..virt..vmx..VmxVcpu as …>`).
pub fn in_backend(name: &str, backend: Backend) -> bool {
    let module = module(backend);
    name.contains(&format!("4virt{}{module}", module.len()))
        || name.contains(&format!("..virt..{module}.."))
        || name.contains(&format!("::virt::{module}::"))
}

/// The code of one backend in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeSize {
    pub bytes: u64,
    pub symbols: usize,
}

/// Sums the sizes of the text symbols in [`in_backend`] plus the backend's
/// [`assembly_symbols`], each address once. Assembly symbols carry no size (`global_asm!` without `.size`):
/// theirs is the distance to the next symbol of the same section, or to its end.
pub fn backend_code(data: &[u8], backend: Backend) -> Result<CodeSize, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|error| error.to_string())?;
    // Functions, and labels in code sections (`global_asm!` symbols have no type).
    let in_code = |index: Option<SectionIndex>| {
        index
            .and_then(|index| file.section_by_index(index).ok())
            .is_some_and(|section| section.kind() == SectionKind::Text)
    };
    let text: Vec<_> = file
        .symbols()
        .filter(|symbol| {
            symbol.kind() == SymbolKind::Text
                || (symbol.kind() == SymbolKind::Unknown && in_code(symbol.section_index()))
        })
        .collect();
    if text.is_empty() {
        return Err("the image has no text symbols (stripped?)".into());
    }
    let section_end = |index: SectionIndex| {
        file.section_by_index(index)
            .map(|section| section.address() + section.size())
            .ok()
    };
    let mut size = CodeSize {
        bytes: 0,
        symbols: 0,
    };
    let mut missing: Vec<&str> = assembly_symbols(backend).to_vec();
    // Aliases (two names for one address) are counted once.
    let mut counted = std::collections::BTreeSet::new();
    for symbol in &text {
        let Ok(name) = symbol.name() else { continue };
        let assembly = missing.iter().position(|wanted| *wanted == name);
        if !in_backend(name, backend) && assembly.is_none() {
            continue;
        }
        let bytes = if symbol.size() != 0 {
            symbol.size()
        } else {
            let section = symbol.section_index();
            let next = text
                .iter()
                .filter(|other| other.section_index() == section)
                .map(ObjectSymbol::address)
                .filter(|&address| address > symbol.address())
                .min()
                .or_else(|| section.and_then(section_end))
                .unwrap_or(symbol.address());
            next - symbol.address()
        };
        if let Some(position) = assembly {
            missing.remove(position);
        }
        if !counted.insert(symbol.address()) {
            continue;
        }
        size.bytes += bytes;
        size.symbols += 1;
    }
    if !missing.is_empty() {
        return Err(format!(
            "the image has no symbol {}",
            missing.join(", no symbol ")
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_backends_symbols() {
        let vmx = [
            "_ZN18tessera_hypervisor4virt3vmx7vmwrite17hdf126405ec443801E",
            "_ZN95_$LT$tessera_hypervisor..virt..vmx..VmxVcpu$u20$as$u20$tessera_hypervisor..virt..VirtualCpu$GT$3run17h4c60c76ef4b81ee7E",
            "_RNvNtNtCs1234_18tessera_hypervisor4virt3vmx7vmwrite",
            "tessera_hypervisor::virt::vmx::VmxVcpu::new",
        ];
        for name in vmx {
            assert!(in_backend(name, Backend::Vmx), "{name}");
            assert!(!in_backend(name, Backend::Svm), "{name}");
        }
        let neither = [
            // A generic exit handler, shared by both backends.
            "_ZN18tessera_hypervisor4virt4exit6handle17h0123456789abcdefE",
            // The policy crate's VMX helpers are not the backend module.
            "_ZN14tessera_policy3vmx22instruction_error_name17h4ca1c0597b610f2cE",
            // A module whose name only starts with `vmx`.
            "_ZN18tessera_hypervisor4virt6vmxcap5check17h0123456789abcdefE",
        ];
        for name in neither {
            assert!(!in_backend(name, Backend::Vmx), "{name}");
            assert!(!in_backend(name, Backend::Svm), "{name}");
        }
        assert!(in_backend(
            "_ZN18tessera_hypervisor4virt3svm4Vmcb13write_segment17haf73e450eb9e1cfcE",
            Backend::Svm
        ));
    }

    #[test]
    fn rejects_what_is_not_an_elf_image() {
        assert!(loadable_bytes(b"not an ELF file").is_err());
        assert!(backend_code(b"\x7fELF", Backend::Svm).is_err());
    }

    /// The running test binary is an x86-64 ELF with symbols: enough to check the walk.
    #[test]
    fn reads_a_real_elf_file() {
        let Ok(data) = std::env::current_exe().and_then(std::fs::read) else {
            return;
        };
        assert!(loadable_bytes(&data).is_ok_and(|bytes| bytes > 0));
        // No backend symbols in xtask: the assembly symbols are reported missing.
        assert_eq!(
            backend_code(&data, Backend::Vmx),
            Err("the image has no symbol vmx_run, no symbol vmx_exit".into())
        );
    }
}
