/*
 * fleetboot purgatory, ppc64le entry.
 *
 * The running kernel's kexec_sequence (arch/powerpc/kernel/misc_64.S) ends like this: every
 * segment copied into place, the MMU off (real mode), interrupts off, the CPU still little-endian
 * and in 64-bit mode, and then
 *
 *   - the first 0x100 bytes at the entry point (here: purgatory_start) copied to address 0;
 *   - the other CPUs released from kexec_wait to address 0x60 of that copy, big-endian, with
 *     r3 = their physical CPU number;
 *   - this CPU entering purgatory_start with r3 = its physical CPU number, r4 = the entry
 *     point, r5 = 0.
 *
 * So the 0x100 bytes below are the next kernel's own first 0x100 bytes (the loader writes them
 * into fleetboot_kernel_head): at 0x60 the kernel's secondary hold loop, which the released CPUs
 * run from address 0 until the new kernel calls them, and at 0x5c its __run_at_load word.  Only
 * the first word is ours: the branch to the master code.
 *
 * The master code sets up a TOC pointer and a stack of its own, lets C verify every segment
 * (and, for a crash load, save the low memory the capture kernel boots over), then enters the
 * kernel the way Documentation/arch/powerpc/booting.rst says: r3 = the device tree, r4 = the
 * kernel's own address, r5 = 0 (no Open Firmware), MMU off, big-endian (rfid with MSR_LE
 * clear; the kernel's FIXUP_ENDIAN switches back), like the kernel's own kexec_file purgatory.
 *
 * Every reference is PC-relative, TOC-relative or a branch, so the object links at any address
 * (R_PPC64_REL16_HA/LO, TOC16_HA/LO/LO_DS and REL24 only).
 */

#define MSR_LE	1

	.abiversion 2
	.text
	.balign	256
	.globl	purgatory_start
	.type	purgatory_start, @function
purgatory_start:
	b	master

	/* Bytes 4..0x100: the next kernel's first 0x100 bytes, written by the loader. */
	.globl	fleetboot_kernel_head
	.type	fleetboot_kernel_head, @object
fleetboot_kernel_head:
	.org	purgatory_start + 0x60
	b	.			/* until the loader fills it: a secondary CPU waits here */
	.org	purgatory_start + 0x100
	.size	fleetboot_kernel_head, . - fleetboot_kernel_head

master:
	or	1,1,1			/* low thread priority while the other threads settle */
	isync
	mr	31,3			/* our physical CPU number, kept in a non-volatile register */

	/* r2 = .TOC. (the linker defines it), found PC-relatively. */
	bcl	20,31,1f
1:	mflr	12
	addis	2,12,(.TOC.-1b)@ha
	addi	2,2,(.TOC.-1b)@l

	/* r1 = our own stack, with a zero back chain and the 32-byte ELFv2 frame header. */
	addis	1,2,stack_top@toc@ha
	addi	1,1,stack_top@toc@l
	li	0,0
	stdu	0,-32(1)

	/* Returns only when every segment matched (else it halts with a message). */
	bl	purgatory_main
	nop
	mr	3,31
	bl	ppc64_before_kernel	/* (physical CPU): boot CPU in the tree, __run_at_load */
	nop

	or	2,2,2			/* normal priority again */
	/* Give the released CPUs time to leave for 0x60 before a normal kernel copies itself
	 * over low memory (kexec-tools waits the same way). */
	lis	6,1
	mtctr	6
2:	bdnz	2b

	addis	9,2,fleetboot_kernel_entry@toc@ha
	ld	10,fleetboot_kernel_entry@toc@l(9)
	addis	9,2,fleetboot_kernel@toc@ha
	ld	4,fleetboot_kernel@toc@l(9)
	addis	9,2,fleetboot_device_tree@toc@ha
	ld	3,fleetboot_device_tree@toc@l(9)
	li	5,0

	mfmsr	11
	andi.	0,11,MSR_LE
	beq	3f
	/* Little-endian now: enter the kernel big-endian through rfid. */
	mtsrr0	10
	rldicr	11,11,0,62		/* clear MSR_LE (the least significant bit) */
	mtsrr1	11
	rfid
3:	mtctr	10
	bctr
	.size	purgatory_start, . - purgatory_start

/*
 * long ppc64_hcall(opcode, arg1, arg2, arg3, arg4): a PAPR hypervisor call (sc 1) with r3 = the
 * opcode and r4.. = its arguments, returning the status in r3.  The hypervisor may change the
 * condition register, whose fields cr2-cr4 the ELFv2 ABI keeps across calls: saved in the
 * caller's CR save word (8(r1)) and restored.
 */
	.globl	ppc64_hcall
	.type	ppc64_hcall, @function
ppc64_hcall:
	mfcr	0
	stw	0,8(1)
	sc	1
	lwz	0,8(1)
	mtcrf	0xff,0
	blr
	.size	ppc64_hcall, . - ppc64_hcall

	.bss
	.balign	16
stack:
	.skip	16384
stack_top:

	.section .note.GNU-stack, "", @progbits
