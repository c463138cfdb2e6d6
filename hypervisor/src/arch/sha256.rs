//! SHA-256 of the partitions' boot blobs: with the processor's SHA extensions where CPUID
//! reports them, else in software (the sha2 crate). The padding is host-tested policy
//! (`tessera_policy::sha256`); only the block compression is assembly (sha256_extensions.s).

use super::cpuid;
use sha2::Digest as _;
use tessera_policy::sha256::BLOCK_BYTES;

core::arch::global_asm!(include_str!("sha256_extensions.s"));

extern "sysv64" {
    /// Applies the compression function to `state` once per 64-byte block at `blocks`.
    ///
    /// # Safety
    /// The processor has SHA and SSE2 and this core has CR4.OSFXSR set and CR0.EM, CR0.TS
    /// clear ([`extensions_usable`]); `state` points to 8 writable words; `blocks` to
    /// `count` (at least 1) readable 64-byte blocks.
    fn tessera_sha256_compress(state: *mut u32, blocks: *const u8, count: usize);
}

/// Which way this core computes a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SHA256RNDS2 / SHA256MSG1 / SHA256MSG2 (about 3 instructions a byte).
    Extensions,
    /// The sha2 crate in general-purpose registers (about 54 instructions a byte).
    Software,
}

impl Engine {
    pub fn describe(self) -> &'static str {
        match self {
            Engine::Extensions => "the processor's SHA extensions",
            Engine::Software => "software (no SHA extensions reported by CPUID)",
        }
    }
}

/// The engine this core can use: the extensions when CPUID.7.0:EBX[29] (SHA) and
/// CPUID.1:EDX[26] (SSE2) report them and SSE is enabled on this core (CR4.OSFXSR set,
/// CR0.EM and CR0.TS clear, as `host_paging::enter` leaves every core; Intel SDM vol. 1
/// §13.1.3: else SSE instructions fault).
pub fn engine() -> Engine {
    let sha = cpuid::query(0, 0)[0] >= 7 && cpuid::query(7, 0)[1] & (1 << 29) != 0;
    let sse2 = cpuid::query(1, 0)[3] & (1 << 26) != 0;
    if sha && sse2 && super::host_paging::sse_enabled() {
        Engine::Extensions
    } else {
        Engine::Software
    }
}

/// The SHA-256 of `bytes`, with `engine` (which must be this core's [`engine`] or
/// [`Engine::Software`]).
pub fn digest(bytes: &[u8], engine: Engine) -> [u8; 32] {
    match engine {
        Engine::Extensions => tessera_policy::sha256::digest(bytes, |state, blocks| {
            // SAFETY: `engine` reported the extensions usable on this core; `state` is 8
            // words; `digest` passes only non-empty runs of whole 64-byte blocks.
            unsafe {
                tessera_sha256_compress(
                    state.as_mut_ptr(),
                    blocks.as_ptr(),
                    blocks.len() / BLOCK_BYTES,
                )
            }
        }),
        Engine::Software => sha2::Sha256::digest(bytes).into(),
    }
}
