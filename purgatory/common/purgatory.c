/*
 * fleetboot purgatory: check that every segment the loader handed to the kernel arrived intact
 * before trusting it with the machine.
 *
 * This part is the same on every architecture; <arch>/ adds the entry code, the console and the
 * way to halt (arch.h).  The loader (plugins/module_utils/kexec/purgatory/linker.py) links the
 * object in Python and fills the variables below by symbol name and exact size.  They live in
 * .data, not .bss, so that the object carries bytes for them the loader can overwrite.
 */

#include "types.h"
#include "sha256.h"
#include "arch.h"

#define MAX_REGIONS 16          /* the kernel accepts at most 16 segments, purgatory included */

struct region {
	u64 start;                  /* physical address (identity-mapped while we run) */
	u64 len;                    /* bytes; unused entries (and empty segments) have 0 and are skipped */
	u8 sha256[SHA256_DIGEST_SIZE];  /* sha256 of these len bytes, as the loader computed it */
};

/* The loader packs each entry as little-endian "<QQ32s": 48 bytes, no padding anywhere. */
_Static_assert(sizeof(struct region) == 48, "struct region must be 48 bytes, as the loader packs it");
_Static_assert(__builtin_offsetof(struct region, sha256) == 16, "sha256 must follow start and len");

#define LOADER_SETS __attribute__((section(".data"), used))

/*
 * Filled by the loader: entry i describes plan segment i (the purgatory itself excluded), so
 * the index printed on a mismatch is the segment's position in the loader's plan report.
 */
LOADER_SETS struct region fleetboot_sha256_regions[MAX_REGIONS];
/*
 * Filled by the loader for crash loads only (len 0 otherwise): the low RAM the capture kernel
 * will boot over (on x86 the 640 KiB below 0xa0000) is copied to a segment inside the crash
 * region, where the ELF core header the loader built points for that range.  Copied at crash time, here, because
 * only then does the memory hold what the crashed kernel left.
 */
LOADER_SETS u64 fleetboot_backup_src;
LOADER_SETS u64 fleetboot_backup_dst;
LOADER_SETS u64 fleetboot_backup_len;

/* The console reads "...: sha256 mismatch in segment N, refusing to boot". */
static const char mismatch_prefix[] = "\r\nfleetboot purgatory: sha256 mismatch in segment ";
static const char mismatch_suffix[] = ", refusing to boot\r\n";

static void console_puts(const char *s)
{
	while (*s)
		arch_console_putc(*s++);
}

/* Decimal, without division helpers from libgcc (u32 division is a single instruction). */
static void console_put_decimal(u32 value)
{
	char digits[10];
	unsigned int n = 0;

	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		arch_console_putc(digits[--n]);
}

/* Compare without early exit; timing does not matter here, but it costs nothing. */
static int digests_equal(const u8 *a, const u8 *b)
{
	u8 diff = 0;
	unsigned int i;

	for (i = 0; i < SHA256_DIGEST_SIZE; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* Say which segment is damaged on the console, then stop: booting a damaged kernel helps nobody. */
static __attribute__((noreturn)) void refuse_to_boot(u32 segment)
{
	arch_console_init();
	console_puts(mismatch_prefix);
	console_put_decimal(segment);
	console_puts(mismatch_suffix);
	arch_halt();
}

/*
 * Returns only when every region hashes to its own digest; the first region that does not
 * ends the boot here.
 */
static void purgatory_verify(void)
{
	struct sha256_state state;
	u8 digest[SHA256_DIGEST_SIZE];
	u32 i;

	for (i = 0; i < MAX_REGIONS; i++) {
		const struct region *r = &fleetboot_sha256_regions[i];

		if (!r->len)
			continue;
		sha256_begin(&state);
		sha256_feed(&state, (const u8 *)r->start, r->len);
		sha256_finish(&state, digest);
		if (!digests_equal(digest, r->sha256))
			refuse_to_boot(i);
	}
}

/* Byte copy: 640 KiB once per crash; no libc, and no memcpy for gcc to call (see build.py). */
static void copy_backup_region(void)
{
	volatile const u8 *src = (volatile const u8 *)fleetboot_backup_src;
	u8 *dst = (u8 *)fleetboot_backup_dst;
	u64 i;

	for (i = 0; i < fleetboot_backup_len; i++)
		dst[i] = src[i];
}

/*
 * Called from the arch's entry code on our own stack: verify every segment, then (crash loads)
 * save the backup region.  Returns only when the new kernel may be entered.
 */
void purgatory_main(void)
{
	purgatory_verify();
	if (fleetboot_backup_len)
		copy_backup_region();
}
