/*
 * fleetboot purgatory: check that every segment the loader handed to the kernel arrived intact
 * before trusting it with the machine.
 *
 * The loader (plugins/module_utils/kexec/purgatory.py) links this object in Python and fills the
 * variables below by symbol name and exact size.  They live in .data, not .bss, so that the
 * object carries bytes for them the loader can overwrite.
 */

#include "types.h"
#include "sha256.h"

#define MAX_REGIONS 16          /* the kernel accepts at most 16 segments, purgatory included */
#define SERIAL_PORT 0x3f8       /* COM1, where the lab VMs and most servers log the console */

struct region {
	u64 start;                  /* physical address (identity-mapped while we run) */
	u64 len;                    /* bytes; 0 ends nothing, unused entries are simply skipped */
};

#define LOADER_SETS __attribute__((section(".data"), used))

/* Filled by the loader: the regions to hash, in order, and the digest of their concatenation. */
LOADER_SETS struct region fleetboot_sha256_regions[MAX_REGIONS];
LOADER_SETS u8 fleetboot_sha256_digest[SHA256_DIGEST_SIZE];
/* Filled by the loader: where entry.S jumps and what it puts in %rsi. */
LOADER_SETS u64 fleetboot_kernel_entry;
LOADER_SETS u64 fleetboot_boot_params;

static const char mismatch_message[] =
	"\r\nfleetboot purgatory: sha256 mismatch, refusing to boot\r\n";

static inline void outb(u16 port, u8 value)
{
	__asm__ __volatile__("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 value;

	__asm__ __volatile__("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/*
 * Program COM1 for 115200 8N1 ourselves: after a crash we cannot know what state the old
 * kernel left the UART in.  Without a UART the port reads 0xff, so the wait below never spins.
 */
static void serial_init(void)
{
	outb(SERIAL_PORT + 1, 0x00);    /* no interrupts */
	outb(SERIAL_PORT + 3, 0x80);    /* DLAB on to set the divisor */
	outb(SERIAL_PORT + 0, 0x01);    /* divisor 1 = 115200 baud */
	outb(SERIAL_PORT + 1, 0x00);
	outb(SERIAL_PORT + 3, 0x03);    /* DLAB off, 8 bits, no parity, 1 stop bit */
	outb(SERIAL_PORT + 2, 0x07);    /* FIFOs on and cleared */
	outb(SERIAL_PORT + 4, 0x03);    /* DTR, RTS */
}

static void serial_putc(char c)
{
	unsigned int spins;

	/* Bounded wait for the transmit holding register: a wedged UART must not hide the halt. */
	for (spins = 0; spins < 100000; spins++)
		if (inb(SERIAL_PORT + 5) & 0x20)
			break;
	outb(SERIAL_PORT, (u8)c);
}

static void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static __attribute__((noreturn)) void halt_forever(void)
{
	for (;;)
		__asm__ __volatile__("cli; hlt");
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

/* Called from entry.S on our own stack.  Returns only when every region hashes as expected. */
void purgatory_verify(void)
{
	struct sha256_state state;
	u8 digest[SHA256_DIGEST_SIZE];
	unsigned int i;

	sha256_begin(&state);
	for (i = 0; i < MAX_REGIONS; i++) {
		const struct region *r = &fleetboot_sha256_regions[i];

		if (r->len)
			sha256_feed(&state, (const u8 *)r->start, r->len);
	}
	sha256_finish(&state, digest);
	if (digests_equal(digest, fleetboot_sha256_digest))
		return;

	serial_init();
	serial_puts(mismatch_message);
	halt_forever();
}
