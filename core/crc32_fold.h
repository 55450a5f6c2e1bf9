/* ibfleet: CRC-32 (zlib's, IEEE 802.3, reflected) of a recording record, for core/replay.pyx.
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Records are short (about 100-400 bytes), where zlib's table-driven crc32 runs near
 * 1.5 GB/s. On x86-64 with PCLMULQDQ the bulk is folded 128 bits at a time with carry-less
 * multiplication, as described in "Fast CRC Computation for Generic Polynomials Using
 * PCLMULQDQ Instruction" (Gopal, Ozturk et al., Intel, 2009); the constants are the
 * bit-reflected x^n mod P(x) values of that paper for P = 0x104C11DB7, and the tail (under
 * 16 bytes) a byte at a time. Anything else (another CPU, short input) is zlib alone.
 * tests/core/test_replay_crc.py checks it against zlib on random inputs.
 */
#ifndef IBFLEET_CRC32_FOLD_H
#define IBFLEET_CRC32_FOLD_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define IBF_HAVE_FOLD 1

__attribute__((target("pclmul,sse4.1")))
static uint32_t ibf_fold16(const unsigned char *p, size_t n, uint32_t state)
{
    /* n >= 64, a multiple of 16; state: the running CRC register (not inverted back) */
    const __m128i k_4x = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);  /* 512-bit fold */
    const __m128i k_1x = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);  /* 128-bit fold */
    const __m128i k_64 = _mm_set_epi64x(0, 0x0163cd6124LL);               /* 64 -> 32 */
    const __m128i mu_p = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);  /* Barrett: P, mu */
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i a, b, c, d, t, u;

    a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)state));
    b = _mm_loadu_si128((const __m128i *)(p + 16));
    c = _mm_loadu_si128((const __m128i *)(p + 32));
    d = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    n -= 64;
    while (n >= 64) {  /* four lanes, 64 bytes a step */
        t = _mm_clmulepi64_si128(a, k_4x, 0x00);
        a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_4x, 0x11), t),
                          _mm_loadu_si128((const __m128i *)p));
        t = _mm_clmulepi64_si128(b, k_4x, 0x00);
        b = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(b, k_4x, 0x11), t),
                          _mm_loadu_si128((const __m128i *)(p + 16)));
        t = _mm_clmulepi64_si128(c, k_4x, 0x00);
        c = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(c, k_4x, 0x11), t),
                          _mm_loadu_si128((const __m128i *)(p + 32)));
        t = _mm_clmulepi64_si128(d, k_4x, 0x00);
        d = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(d, k_4x, 0x11), t),
                          _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    /* the four lanes into one */
    t = _mm_clmulepi64_si128(a, k_1x, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_1x, 0x11), t), b);
    t = _mm_clmulepi64_si128(a, k_1x, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_1x, 0x11), t), c);
    t = _mm_clmulepi64_si128(a, k_1x, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_1x, 0x11), t), d);
    while (n >= 16) {  /* then 16 bytes a step */
        t = _mm_clmulepi64_si128(a, k_1x, 0x00);
        a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_1x, 0x11), t),
                          _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    /* 128 -> 64 bits */
    t = _mm_clmulepi64_si128(a, k_1x, 0x10);
    a = _mm_xor_si128(_mm_srli_si128(a, 8), t);
    /* 64 -> 32 bits */
    u = _mm_srli_si128(a, 4);
    a = _mm_clmulepi64_si128(_mm_and_si128(a, low32), k_64, 0x00);
    a = _mm_xor_si128(a, u);
    /* Barrett reduction */
    t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(a, low32), mu_p, 0x10), low32);
    t = _mm_clmulepi64_si128(t, mu_p, 0x00);
    a = _mm_xor_si128(a, t);
    return (uint32_t)_mm_extract_epi32(a, 1);
}

static int ibf_fold_ok = -1;
static uint32_t ibf_table[256];

static void ibf_init(void)
{
    uint32_t c;
    int i, k;
    for (i = 0; i < 256; i++) {
        c = (uint32_t)i;
        for (k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
        ibf_table[i] = c;
    }
    __builtin_cpu_init();
    ibf_fold_ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}

static inline uint32_t ibf_crc32(const unsigned char *p, size_t n)
{
    size_t bulk;
    uint32_t crc;
    if (ibf_fold_ok < 0)
        ibf_init();
    if (!ibf_fold_ok || n < 64)
        return (uint32_t)crc32(0UL, p, (unsigned int)n);
    bulk = n & ~(size_t)15;
    crc = ibf_fold16(p, bulk, 0xffffffffu);
    for (p += bulk, n -= bulk; n; n--, p++)  /* the tail, a byte at a time */
        crc = (crc >> 8) ^ ibf_table[(crc ^ *p) & 0xff];
    return ~crc;
}

#else

static inline uint32_t ibf_crc32(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(0UL, p, (unsigned int)n);
}

#endif
#endif
