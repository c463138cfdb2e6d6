/* SHA-256 block compression with the processor's SHA extensions (Intel SDM vol. 1 §5.18 and
   vol. 2 SHA256RNDS2, SHA256MSG1, SHA256MSG2; AMD APM vol. 4). Intel syntax, as Rust's
   global_asm! assembles it; the hypervisor (arch/sha256.rs) and a host test both include
   this text.

   void tessera_sha256_compress(uint32_t state[8], const uint8_t *blocks, size_t count)
   System V: rdi = state (a..h), rsi = blocks, rdx = count of 64-byte blocks (at least 1).

   Only SSE2 and the SHA instructions are used (no SSSE3/SSE4.1), so a processor needs just
   CPUID.7.0:EBX.SHA[29] and SSE2. All XMM registers used are caller-saved in this ABI, and
   every one is zeroed before returning, so no message or state bytes stay in registers a
   guest can later read.

   Register use:
     xmm0   two rounds' W + K, the implicit operand of SHA256RNDS2
     xmm1   state A,B,E,F (dwords high to low), xmm2 state C,D,G,H
     xmm3-6 the message schedule, four words each, rotating
     xmm7   scratch (byte swap; the W[t-7] window)
     xmm8   scratch (the W[t-7] window)
     xmm9   A,B,E,F at the block's start, xmm10 C,D,G,H at the block's start */

    /* Four rounds (two SHA256RNDS2) with the message words in xmm<words>, group <group>'s
       round constants added. Leaves A,B,E,F in xmm1 and C,D,G,H in xmm2, as it found them. */
    .macro sha256_four_rounds group, words
    movdqa xmm0, xmm\words
    paddd xmm0, [rax + 16 * \group]
    sha256rnds2 xmm2, xmm1
    pshufd xmm0, xmm0, 0x0E
    sha256rnds2 xmm1, xmm2
    .endm

    /* Loads words 4g..4g+3 of the block into xmm<words>, byte-swapped with SSE2 (swap the
       16-bit halves of each dword, then the two bytes of each half), and runs their rounds. */
    .macro sha256_first_rounds group, words
    movdqu xmm\words, [rsi + 16 * \group]
    pshuflw xmm\words, xmm\words, 0xB1
    pshufhw xmm\words, xmm\words, 0xB1
    movdqa xmm7, xmm\words
    psrlw xmm\words, 8
    psllw xmm7, 8
    por xmm\words, xmm7
    sha256_four_rounds \group, \words
    .endm

    /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] (FIPS 180-4 §6.2.2) for
       t = 4g..4g+3, into the register that held W[4g-16..], then its rounds. W[4g-7..4g-4]
       are the third register's upper three words and the newest's lowest. */
    .macro sha256_scheduled_rounds group, oldest, second, third, newest
    sha256msg1 xmm\oldest, xmm\second
    movdqa xmm7, xmm\third
    psrldq xmm7, 4
    movdqa xmm8, xmm\newest
    pslldq xmm8, 12
    por xmm7, xmm8
    paddd xmm\oldest, xmm7
    sha256msg2 xmm\oldest, xmm\newest
    sha256_four_rounds \group, \oldest
    .endm

    .section .text.tessera_sha256_compress,"ax",@progbits
    .globl tessera_sha256_compress
    .p2align 4
tessera_sha256_compress:
    /* state[0..4] = a,b,c,d and state[4..8] = e,f,g,h, low dword first. SHA256RNDS2 wants
       [F,E,B,A] and [H,G,D,C] (low dword first). */
    movdqu xmm7, [rdi]
    movdqu xmm8, [rdi + 16]
    movdqa xmm1, xmm8
    shufps xmm1, xmm7, 0x11
    movdqa xmm2, xmm8
    shufps xmm2, xmm7, 0xBB
    lea rax, [rip + tessera_sha256_round_constants]

2:
    movdqa xmm9, xmm1
    movdqa xmm10, xmm2

    /* Rounds 0-15: the block's words, big-endian in memory. */
    sha256_first_rounds 0, 3
    sha256_first_rounds 1, 4
    sha256_first_rounds 2, 5
    sha256_first_rounds 3, 6
    /* Rounds 16-63, four at a time. Before group g the registers hold, in rotation,
       W[4g-16..], W[4g-12..], W[4g-8..], W[4g-4..]; the oldest becomes W[4g..]. */
    sha256_scheduled_rounds 4, 3, 4, 5, 6
    sha256_scheduled_rounds 5, 4, 5, 6, 3
    sha256_scheduled_rounds 6, 5, 6, 3, 4
    sha256_scheduled_rounds 7, 6, 3, 4, 5
    sha256_scheduled_rounds 8, 3, 4, 5, 6
    sha256_scheduled_rounds 9, 4, 5, 6, 3
    sha256_scheduled_rounds 10, 5, 6, 3, 4
    sha256_scheduled_rounds 11, 6, 3, 4, 5
    sha256_scheduled_rounds 12, 3, 4, 5, 6
    sha256_scheduled_rounds 13, 4, 5, 6, 3
    sha256_scheduled_rounds 14, 5, 6, 3, 4
    sha256_scheduled_rounds 15, 6, 3, 4, 5

    paddd xmm1, xmm9
    paddd xmm2, xmm10
    add rsi, 64
    dec rdx
    jnz 2b

    /* Back to a,b,c,d and e,f,g,h. */
    movdqa xmm7, xmm1
    shufps xmm7, xmm2, 0xBB
    movdqa xmm8, xmm1
    shufps xmm8, xmm2, 0x11
    movdqu [rdi], xmm7
    movdqu [rdi + 16], xmm8

    pxor xmm0, xmm0
    pxor xmm1, xmm1
    pxor xmm2, xmm2
    pxor xmm3, xmm3
    pxor xmm4, xmm4
    pxor xmm5, xmm5
    pxor xmm6, xmm6
    pxor xmm7, xmm7
    pxor xmm8, xmm8
    pxor xmm9, xmm9
    pxor xmm10, xmm10
    ret

    /* K[0..63] (FIPS 180-4 §4.2.2), 16-byte aligned for PADDD's memory operand. */
    .section .rodata.tessera_sha256_round_constants,"a",@progbits
    .p2align 4
tessera_sha256_round_constants:
    .long 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .long 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .long 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .long 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .long 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .long 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .long 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .long 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
    .text
