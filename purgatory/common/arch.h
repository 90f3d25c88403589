/*
 * What each architecture's purgatory provides to the shared code in purgatory.c: a console to
 * say why it stops, and a way to stop for good.  Everything else (the region table, the sha256
 * check, the crash-time backup copy) is the same on every architecture.
 */
#ifndef FLEETBOOT_ARCH_H
#define FLEETBOOT_ARCH_H

/* Make the console usable: after a crash nothing is known about the state it was left in. */
void arch_console_init(void);
/* Write one character; must return even when no console is there. */
void arch_console_putc(char c);
/* Stop this CPU forever (interrupts off, no return). */
__attribute__((noreturn)) void arch_halt(void);

#endif
