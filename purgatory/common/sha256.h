/* SHA-256 (FIPS 180-4) for the purgatory: no libc, no heap, no SIMD. */
#ifndef FLEETBOOT_SHA256_H
#define FLEETBOOT_SHA256_H

#include "types.h"

#define SHA256_DIGEST_SIZE 32
#define SHA256_BLOCK_SIZE 64

struct sha256_state {
	u32 h[8];
	u64 length;                     /* bytes hashed so far */
	u32 used;                       /* bytes waiting in block[] */
	u8 block[SHA256_BLOCK_SIZE];
};

void sha256_begin(struct sha256_state *s);
void sha256_feed(struct sha256_state *s, const u8 *data, u64 len);
void sha256_finish(struct sha256_state *s, u8 out[SHA256_DIGEST_SIZE]);

#endif
