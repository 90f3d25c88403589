/*
 * SHA-256 as specified by FIPS 180-4, written for the purgatory.
 *
 * Small rather than fast: the purgatory hashes a few tens of megabytes once, on a CPU that is
 * otherwise idle, and every byte of code here runs before anything can report a bug.
 */

#include "sha256.h"

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes (FIPS 180-4 4.2.2). */
static const u32 round_constants[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline u32 rotr(u32 x, unsigned int n)
{
	return (x >> n) | (x << (32 - n));
}

/* Fold one 64-byte block into the chaining value (FIPS 180-4 6.2.2). */
static void compress(u32 h[8], const u8 *p)
{
	u32 w[64];
	u32 a, b, c, d, e, f, g, k;
	unsigned int i;

	for (i = 0; i < 16; i++)
		w[i] = ((u32)p[4 * i] << 24) | ((u32)p[4 * i + 1] << 16) |
		       ((u32)p[4 * i + 2] << 8) | (u32)p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		u32 s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
		u32 s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}

	a = h[0]; b = h[1]; c = h[2]; d = h[3];
	e = h[4]; f = h[5]; g = h[6]; k = h[7];
	for (i = 0; i < 64; i++) {
		u32 big1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
		u32 choose = (e & f) ^ (~e & g);
		u32 t1 = k + big1 + choose + round_constants[i] + w[i];
		u32 big0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
		u32 majority = (a & b) ^ (a & c) ^ (b & c);
		u32 t2 = big0 + majority;

		k = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d;
	h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void sha256_begin(struct sha256_state *s)
{
	/* First 32 bits of the fractional parts of the square roots of the first 8 primes. */
	s->h[0] = 0x6a09e667; s->h[1] = 0xbb67ae85; s->h[2] = 0x3c6ef372; s->h[3] = 0xa54ff53a;
	s->h[4] = 0x510e527f; s->h[5] = 0x9b05688c; s->h[6] = 0x1f83d9ab; s->h[7] = 0x5be0cd19;
	s->length = 0;
	s->used = 0;
}

void sha256_feed(struct sha256_state *s, const u8 *data, u64 len)
{
	s->length += len;
	/* Top up a partly filled block first. */
	while (len && s->used) {
		s->block[s->used++] = *data++;
		len--;
		if (s->used == SHA256_BLOCK_SIZE) {
			compress(s->h, s->block);
			s->used = 0;
		}
	}
	/* Whole blocks straight from the caller's memory: no copy for the bulk of a segment. */
	while (len >= SHA256_BLOCK_SIZE) {
		compress(s->h, data);
		data += SHA256_BLOCK_SIZE;
		len -= SHA256_BLOCK_SIZE;
	}
	while (len--)
		s->block[s->used++] = *data++;
}

void sha256_finish(struct sha256_state *s, u8 out[SHA256_DIGEST_SIZE])
{
	u64 bits = s->length * 8;
	unsigned int i;

	/* Padding: a 1 bit, zeros up to 56 mod 64, then the message length in bits, big-endian. */
	s->block[s->used++] = 0x80;
	if (s->used > 56) {
		while (s->used < SHA256_BLOCK_SIZE)
			s->block[s->used++] = 0;
		compress(s->h, s->block);
		s->used = 0;
	}
	while (s->used < 56)
		s->block[s->used++] = 0;
	for (i = 0; i < 8; i++)
		s->block[56 + i] = (u8)(bits >> (56 - 8 * i));
	compress(s->h, s->block);

	for (i = 0; i < 8; i++) {
		out[4 * i] = (u8)(s->h[i] >> 24);
		out[4 * i + 1] = (u8)(s->h[i] >> 16);
		out[4 * i + 2] = (u8)(s->h[i] >> 8);
		out[4 * i + 3] = (u8)s->h[i];
	}
}
