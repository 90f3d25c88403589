/*
 * x86_64 parts of the purgatory: the values entry.S hands to the new kernel, and a console on
 * COM1 (I/O port 0x3f8), where the lab VMs and most servers log the console.
 */

#include "types.h"
#include "arch.h"

#define SERIAL_PORT 0x3f8

#define LOADER_SETS __attribute__((section(".data"), used))

/* Filled by the loader: where entry.S jumps and what it puts in %rsi. */
LOADER_SETS u64 fleetboot_kernel_entry;
LOADER_SETS u64 fleetboot_boot_params;

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
void arch_console_init(void)
{
	outb(SERIAL_PORT + 1, 0x00);    /* no interrupts */
	outb(SERIAL_PORT + 3, 0x80);    /* DLAB on to set the divisor */
	outb(SERIAL_PORT + 0, 0x01);    /* divisor 1 = 115200 baud */
	outb(SERIAL_PORT + 1, 0x00);
	outb(SERIAL_PORT + 3, 0x03);    /* DLAB off, 8 bits, no parity, 1 stop bit */
	outb(SERIAL_PORT + 2, 0x07);    /* FIFOs on and cleared */
	outb(SERIAL_PORT + 4, 0x03);    /* DTR, RTS */
}

void arch_console_putc(char c)
{
	unsigned int spins;

	/* Bounded wait for the transmit holding register: a wedged UART must not hide the halt. */
	for (spins = 0; spins < 100000; spins++)
		if (inb(SERIAL_PORT + 5) & 0x20)
			break;
	outb(SERIAL_PORT, (u8)c);
}

__attribute__((noreturn)) void arch_halt(void)
{
	for (;;)
		__asm__ __volatile__("cli; hlt");
}
