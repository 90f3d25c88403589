/*
 * arm64 parts of the purgatory: the values entry.S hands to the new kernel, a console on the
 * UART the running kernel used (a PL011 or an 8250/16550, found by the loader in the device
 * tree's /chosen/stdout-path or the ACPI SPCR table), and the halt.
 *
 * The UART is driven as the kernel left it: its clock is the board's and not ours to know, so
 * the baud rate is never reprogrammed; we only make sure a PL011's transmitter is enabled.
 * With kind 0 (no console the loader could name) nothing is touched at all.
 */

#include "types.h"
#include "arch.h"

#define LOADER_SETS __attribute__((section(".data"), used))

#define CONSOLE_NONE	0
#define CONSOLE_PL011	1
#define CONSOLE_NS16550	2

/* PL011 (ARM PrimeCell UART, DDI 0183): data, flags, control registers. */
#define PL011_DR	0x00
#define PL011_FR	0x18
#define PL011_CR	0x30
#define PL011_FR_TXFF	(1u << 5)
#define PL011_CR_UARTEN	(1u << 0)
#define PL011_CR_TXE	(1u << 8)

/* 8250/16550: transmit holding register 0, line status register 5 (times the register stride). */
#define NS16550_THR	0
#define NS16550_LSR	5
#define NS16550_LSR_THRE 0x20

/* Filled by the loader: where entry.S jumps, what it puts in x0, and the console. */
LOADER_SETS u64 fleetboot_kernel_entry;
LOADER_SETS u64 fleetboot_dtb;
LOADER_SETS u64 fleetboot_console_kind;
LOADER_SETS u64 fleetboot_console_base;
LOADER_SETS u64 fleetboot_console_shift;	/* log2 of the register stride (8250) */
LOADER_SETS u64 fleetboot_console_width;	/* register access width in bytes, 1 or 4 (8250) */

static inline u32 mmio_read32(u64 addr)
{
	u32 value;

	__asm__ __volatile__("ldr %w0, [%1]" : "=r"(value) : "r"(addr) : "memory");
	return value;
}

static inline void mmio_write32(u64 addr, u32 value)
{
	__asm__ __volatile__("str %w0, [%1]" : : "rZ"(value), "r"(addr) : "memory");
}

static inline u8 mmio_read8(u64 addr)
{
	u8 value;

	__asm__ __volatile__("ldrb %w0, [%1]" : "=r"(value) : "r"(addr) : "memory");
	return value;
}

static inline void mmio_write8(u64 addr, u8 value)
{
	__asm__ __volatile__("strb %w0, [%1]" : : "rZ"(value), "r"(addr) : "memory");
}

static u32 ns16550_read(unsigned int reg)
{
	u64 addr = fleetboot_console_base + ((u64)reg << fleetboot_console_shift);

	return fleetboot_console_width == 4 ? mmio_read32(addr) : mmio_read8(addr);
}

static void ns16550_write(unsigned int reg, u32 value)
{
	u64 addr = fleetboot_console_base + ((u64)reg << fleetboot_console_shift);

	if (fleetboot_console_width == 4)
		mmio_write32(addr, value);
	else
		mmio_write8(addr, (u8)value);
}

void arch_console_init(void)
{
	if (fleetboot_console_kind == CONSOLE_PL011) {
		u32 cr = mmio_read32(fleetboot_console_base + PL011_CR);

		if ((cr & (PL011_CR_UARTEN | PL011_CR_TXE)) != (PL011_CR_UARTEN | PL011_CR_TXE))
			mmio_write32(fleetboot_console_base + PL011_CR, cr | PL011_CR_UARTEN | PL011_CR_TXE);
	}
}

void arch_console_putc(char c)
{
	unsigned int spins;

	/* Bounded waits: a wedged UART must not hide the halt. */
	if (fleetboot_console_kind == CONSOLE_PL011) {
		for (spins = 0; spins < 100000; spins++)
			if (!(mmio_read32(fleetboot_console_base + PL011_FR) & PL011_FR_TXFF))
				break;
		mmio_write32(fleetboot_console_base + PL011_DR, (u8)c);
	} else if (fleetboot_console_kind == CONSOLE_NS16550) {
		for (spins = 0; spins < 100000; spins++)
			if (ns16550_read(NS16550_LSR) & NS16550_LSR_THRE)
				break;
		ns16550_write(NS16550_THR, (u8)c);
	}
}

__attribute__((noreturn)) void arch_halt(void)
{
	for (;;)
		__asm__ __volatile__("msr daifset, #0xf\n\twfi" : : : "memory");
}
