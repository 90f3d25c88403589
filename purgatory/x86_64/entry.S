/*
 * fleetboot purgatory, x86_64 entry.
 *
 * relocate_kernel jumps here in 64-bit long mode, interrupts off, with a page table that
 * identity-maps RAM.  Nothing else can be trusted: the GDT, the stack and the segment registers
 * still belong to the kernel we are leaving (or to a crashed one).  So we load our own GDT and
 * stack first, let C verify the segments, and only then enter the new kernel the way the x86
 * 64-bit boot protocol asks: CS = __BOOT_CS (0x10), DS/ES/SS = __BOOT_DS (0x18), both flat,
 * interrupts off, %rsi = address of struct boot_params.
 *
 * Every reference is RIP-relative or a 64-bit absolute word, so the linker only has to apply
 * R_X86_64_PC32/PLT32/64 and the object may be placed anywhere in RAM.
 */

#define BOOT_CS 0x10
#define BOOT_DS 0x18

	.text
	.code64
	.globl	purgatory_start
	.type	purgatory_start, @function
purgatory_start:
	cli
	cld
	lgdt	gdt_pointer(%rip)

	movl	$BOOT_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	leaq	stack_top(%rip), %rsp

	/* A far return is the only way to reload CS in long mode without a 32-bit absolute. */
	pushq	$BOOT_CS
	leaq	reloaded_cs(%rip), %rax
	pushq	%rax
	lretq
reloaded_cs:
	/* Returns only if every region matched; on a mismatch it halts forever. */
	call	purgatory_main

	movq	fleetboot_boot_params(%rip), %rsi
	movq	fleetboot_kernel_entry(%rip), %rax
	/* The protocol defines only %rsi; clear the rest so nothing leaks between kernels. */
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	xorl	%r10d, %r10d
	xorl	%r11d, %r11d
	xorl	%r12d, %r12d
	xorl	%r13d, %r13d
	xorl	%r14d, %r14d
	xorl	%r15d, %r15d
	jmpq	*%rax
	.size	purgatory_start, . - purgatory_start

	.data
	.balign	16
gdt:
	.quad	0x0000000000000000	/* 0x00: null */
	.quad	0x0000000000000000	/* 0x08: unused */
	.quad	0x00af9a000000ffff	/* 0x10: __BOOT_CS, 64-bit code, base 0, limit 4G, DPL 0 */
	.quad	0x00cf92000000ffff	/* 0x18: __BOOT_DS, data read/write, base 0, limit 4G */
gdt_end:

	.balign	16
	.word	0			/* pad so the 8-byte base below is naturally aligned */
	.word	0
	.word	0
gdt_pointer:
	.word	gdt_end - gdt - 1
	.quad	gdt			/* R_X86_64_64: the linker writes the GDT's physical address */

	.bss
	.balign	16
stack:
	.skip	16384
stack_top:

	.section .note.GNU-stack, "", @progbits
