//! The hypervisor's SHA-256 compression with the processor's SHA extensions (the assembly
//! the hypervisor links, hypervisor/src/arch/sha256_extensions.s) against the sha2 crate,
//! run on the host when its processor has the extensions.

#![cfg(target_arch = "x86_64")]

use proptest::prelude::*;
use sha2::Digest as _;
use tessera_policy::sha256::{digest, BLOCK_BYTES};

core::arch::global_asm!(include_str!("../../src/arch/sha256_extensions.s"));

extern "sysv64" {
    fn tessera_sha256_compress(state: *mut u32, blocks: *const u8, count: usize);
}

fn with_extensions(bytes: &[u8]) -> [u8; 32] {
    digest(bytes, |state, blocks| {
        // SAFETY: the host has SHA and SSE2 (`require_extensions` was checked first) and
        // the OS has enabled SSE; `state` is 8 words and `blocks` holds `len / 64` whole
        // blocks (`digest` passes only those).
        unsafe {
            tessera_sha256_compress(
                state.as_mut_ptr(),
                blocks.as_ptr(),
                blocks.len() / BLOCK_BYTES,
            )
        }
    })
}

/// Whether the host can run the assembly. A host without the extensions cannot check it:
/// the test says so on its output (the QEMU system tests still check it, through the boot's
/// digest check, whose boot line names the path taken).
fn require_extensions() -> bool {
    if std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse2") {
        return true;
    }
    eprintln!("NOT RUN: this host's processor lacks the SHA extensions (CPUID.7.0:EBX[29])");
    false
}

#[test]
fn known_answers_and_every_length_to_four_blocks() {
    if !require_extensions() {
        return;
    }
    assert_eq!(
        with_extensions(b"abc"),
        <[u8; 32]>::from(sha2::Sha256::digest(b"abc"))
    );
    let bytes: Vec<u8> = (0..=255u8).cycle().take(4 * BLOCK_BYTES + 1).collect();
    for length in 0..bytes.len() {
        let expected: [u8; 32] = sha2::Sha256::digest(&bytes[..length]).into();
        assert_eq!(
            with_extensions(&bytes[..length]),
            expected,
            "length {length}"
        );
    }
}

proptest! {
    #[test]
    fn agrees_with_the_sha2_crate(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if require_extensions() {
            let expected: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            prop_assert_eq!(with_extensions(&bytes), expected);
        }
    }
}
