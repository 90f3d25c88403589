/*
 * fleetboot purgatory, arm64 entry.
 *
 * The kernel we leave jumps here at the exception level it ran at (EL1, or EL2 with VHE or
 * through its HVC_SOFT_RESTART), with the MMU and the data cache off and interrupts masked:
 * arm64_relocate_new_kernel (normal loads) and cpu_soft_restart (crash loads) both clear
 * SCTLR_ELx.M and .C before the jump and clean every segment they wrote to the point of coherency.
 * x0 is kimage->arch.dtb_mem, which only kexec_file_load sets: we take no register input and
 * read what the loader linked into us instead.
 *
 * With the MMU off every data access is to Device memory, which faults when unaligned: the C
 * code is built with -mstrict-align and never uses exclusives or DC ZVA.
 *
 * Then we enter the kernel as Documentation/arch/arm64/booting.rst asks: MMU off, D-cache off
 * (the segments were cleaned to the PoC; we write nothing into them), no stale I-cache lines for
 * the image, DAIF masked, x0 = physical address of the device tree, x1 = x2 = x3 = 0, at the
 * Image's first byte.
 *
 * Every reference is PC-relative (ADRP + ADD/LDR with ADR_PREL_PG_HI21 and *_ABS_LO12_NC, or
 * CALL26), so the object may be placed anywhere in RAM.
 */

	.text
	.globl	purgatory_start
	.type	purgatory_start, %function
	.balign	4
purgatory_start:
	msr	daifset, #0xf
	adrp	x9, stack_top
	add	x9, x9, :lo12:stack_top
	mov	sp, x9

	/* Returns only if every region matched; on a mismatch it halts forever. */
	bl	purgatory_main

	adrp	x9, fleetboot_dtb
	ldr	x0, [x9, :lo12:fleetboot_dtb]
	adrp	x9, fleetboot_kernel_entry
	ldr	x10, [x9, :lo12:fleetboot_kernel_entry]

	/* Nothing stale of the image may sit in the I-cache (booting.rst, "Caches, MMUs"). */
	dsb	sy
	ic	iallu
	dsb	sy
	isb

	/* The protocol defines x0..x3; clear the rest so nothing leaks between kernels. */
	mov	x1, xzr
	mov	x2, xzr
	mov	x3, xzr
	mov	x4, xzr
	mov	x5, xzr
	mov	x6, xzr
	mov	x7, xzr
	mov	x8, xzr
	mov	x9, xzr
	mov	x11, xzr
	mov	x12, xzr
	mov	x13, xzr
	mov	x14, xzr
	mov	x15, xzr
	mov	x16, xzr
	mov	x17, xzr
	mov	x18, xzr
	mov	x19, xzr
	mov	x20, xzr
	mov	x21, xzr
	mov	x22, xzr
	mov	x23, xzr
	mov	x24, xzr
	mov	x25, xzr
	mov	x26, xzr
	mov	x27, xzr
	mov	x28, xzr
	mov	x29, xzr
	mov	x30, xzr
	br	x10
	.size	purgatory_start, . - purgatory_start

	.bss
	.balign	16
stack:
	.skip	16384
stack_top:

	.section .note.GNU-stack, "", %progbits
