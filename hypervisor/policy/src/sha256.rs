//! SHA-256 around any block-compression function: the message padding and the digest's byte
//! order (FIPS 180-4 §5.1.1, §5.3.3, §6.2), so that the hypervisor can hash with the
//! processor's SHA extensions while everything but the compression stays host-tested.

/// The initial hash value H(0) (FIPS 180-4 §5.3.3).
pub const INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The bytes of one message block.
pub const BLOCK_BYTES: usize = 64;

/// The SHA-256 digest of `bytes`. `compress` applies the compression function (FIPS 180-4
/// §6.2.2) to the state once per 64-byte block of the slice it is given, in order; the slice
/// is never empty and its length is a multiple of 64.
///
/// The whole blocks of `bytes` go to `compress` in one call, straight from `bytes` (no
/// copy); the padded tail (one or two blocks) in a second call.
pub fn digest(bytes: &[u8], mut compress: impl FnMut(&mut [u32; 8], &[u8])) -> [u8; 32] {
    let mut state = INITIAL_STATE;
    let whole = bytes.len() - bytes.len() % BLOCK_BYTES;
    if whole != 0 {
        compress(&mut state, &bytes[..whole]);
    }
    let tail = &bytes[whole..];
    // §5.1.1: the message, a 1 bit, zeros, then its length in bits as a 64-bit big-endian
    // number, to a multiple of 512 bits. The 1 bit and the length need 9 bytes, so a tail
    // of 56 bytes or more takes a second block.
    let mut padded = [0u8; 2 * BLOCK_BYTES];
    padded[..tail.len()].copy_from_slice(tail);
    padded[tail.len()] = 0x80;
    let padded_length = if tail.len() + 9 <= BLOCK_BYTES {
        BLOCK_BYTES
    } else {
        2 * BLOCK_BYTES
    };
    let length_bits = (bytes.len() as u64).wrapping_mul(8);
    padded[padded_length - 8..padded_length].copy_from_slice(&length_bits.to_be_bytes());
    compress(&mut state, &padded[..padded_length]);
    let mut digest = [0u8; 32];
    for (word, out) in state.iter().zip(digest.chunks_exact_mut(4)) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::{format, string::String, vec, vec::Vec};

    /// The compression function itself, written plainly from FIPS 180-4 §6.2.2, as the
    /// reference the padding is checked with.
    fn reference_compress(state: &mut [u32; 8], blocks: &[u8]) {
        const K: [u32; 64] = [
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2,
        ];
        assert!(!blocks.is_empty() && blocks.len().is_multiple_of(BLOCK_BYTES));
        for block in blocks.chunks_exact(BLOCK_BYTES) {
            let mut w = [0u32; 64];
            for (t, word) in block.chunks_exact(4).enumerate() {
                w[t] = u32::from_be_bytes(word.try_into().unwrap());
            }
            for t in 16..64 {
                let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
                let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
                w[t] = w[t - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[t - 7])
                    .wrapping_add(s1);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
            for t in 0..64 {
                let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
                let choice = (e & f) ^ (!e & g);
                let t1 = h
                    .wrapping_add(s1)
                    .wrapping_add(choice)
                    .wrapping_add(K[t])
                    .wrapping_add(w[t]);
                let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
                let majority = (a & b) ^ (a & c) ^ (b & c);
                let t2 = s0.wrapping_add(majority);
                (h, g, f, e, d, c, b, a) =
                    (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
            }
            for (word, value) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *word = word.wrapping_add(value);
            }
        }
    }

    fn hex(digest: [u8; 32]) -> String {
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples (NIST CSRC "SHA256.pdf") and the empty message.
        let cases: [(&[u8], &str); 3] = [
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(hex(digest(message, reference_compress)), expected);
        }
    }

    #[test]
    fn compress_sees_whole_blocks_only() {
        for length in 0..200 {
            let bytes = vec![0x5a; length];
            let mut calls = Vec::new();
            digest(&bytes, |state, blocks| {
                calls.push(blocks.len());
                reference_compress(state, blocks);
            });
            assert!(calls.iter().all(|&n| n != 0 && n % BLOCK_BYTES == 0));
            // Whole blocks in one call (if any), the padded tail in one more.
            assert_eq!(calls.len(), 1 + usize::from(length >= BLOCK_BYTES));
            let total: usize = calls.iter().sum();
            let expected_blocks = (length + 9).div_ceil(BLOCK_BYTES);
            assert_eq!(total, expected_blocks * BLOCK_BYTES, "length {length}");
        }
    }

    proptest! {
        /// Every length around the padding's boundaries (55, 56, 63, 64, 119, 120, …) and
        /// longer messages, against an independent implementation (the sha2 crate).
        #[test]
        fn agrees_with_the_sha2_crate(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            use sha2::Digest as _;
            let expected: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            prop_assert_eq!(digest(&bytes, reference_compress), expected);
        }
    }
}
