/*
 * ppc64le parts of the purgatory: what the loader tells the entry code (entry.S), the console
 * through the PAPR hypervisor's virtual terminal, the halt, and the two writes that must wait
 * until the segments are verified and the CPU that enters the kernel is known.
 */

#include "types.h"
#include "arch.h"

#define LOADER_SETS __attribute__((section(".data"), used))

/* PAPR hcall: write up to 16 characters, passed in two registers, to a virtual terminal. */
#define H_PUT_TERM_CHAR 0x58
/* Offset of boot_cpuid_phys in a flattened device tree header (big-endian, version >= 2). */
#define FDT_BOOT_CPUID_PHYS 28
/* Offset of __run_at_load in a ppc64 kernel image (arch/powerpc/kernel/head_64.S). */
#define RUN_AT_LOAD_OFFSET 0x5c

long ppc64_hcall(u64 opcode, u64 arg1, u64 arg2, u64 arg3, u64 arg4);
void ppc64_before_kernel(u64 cpu);

/* Filled by the loader: where the kernel was placed, where entry.S jumps, what r3 points at. */
LOADER_SETS u64 fleetboot_kernel;
LOADER_SETS u64 fleetboot_kernel_entry;
LOADER_SETS u64 fleetboot_device_tree;
/*
 * Non-zero for a crash load of a kernel that carries "run0" at 0x5c: the value (1) written
 * into the loaded kernel's __run_at_load, so that it runs where it was loaded instead of
 * copying itself to 0 over the crashed kernel (__after_prom_start reads the word from the
 * image it runs in; the copy at address 0 got the same value from fleetboot_kernel_head).
 */
LOADER_SETS u64 fleetboot_run_at_load;
/* The unit address (reg) of the hvterm1 virtual terminal /chosen/stdout-path names; 0: none. */
LOADER_SETS u64 fleetboot_vterm;

static inline u32 swap32(u32 v)
{
	return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
}

void arch_console_init(void)
{
	/* The hypervisor's terminal needs no set-up. */
}

void arch_console_putc(char c)
{
	if (!fleetboot_vterm)
		return;
	/* The characters go in r6/r7 as a big-endian byte string: the first is the top byte. */
	ppc64_hcall(H_PUT_TERM_CHAR, fleetboot_vterm, 1, (u64)(u8)c << 56, 0);
}

__attribute__((noreturn)) void arch_halt(void)
{
	for (;;)
		__asm__ __volatile__("or 1,1,1" ::: "memory");   /* spin at low thread priority */
}

/*
 * After the segments are verified: the CPU entering the kernel becomes the tree's boot CPU
 * (only known now: for a crash it is whichever CPU panicked), and a crash kernel is told to
 * stay where it was loaded.
 */
void ppc64_before_kernel(u64 cpu)
{
	if (fleetboot_device_tree)
		*(volatile u32 *)(fleetboot_device_tree + FDT_BOOT_CPUID_PHYS) = swap32((u32)cpu);
	if (fleetboot_run_at_load)
		*(volatile u32 *)(fleetboot_kernel + RUN_AT_LOAD_OFFSET) = (u32)fleetboot_run_at_load;
}
