/* Fixed-width types without libc headers: the purgatory is built -ffreestanding -nostdinc. */
#ifndef FLEETBOOT_TYPES_H
#define FLEETBOOT_TYPES_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

_Static_assert(sizeof(u32) == 4 && sizeof(u64) == 8, "LP64 types expected (every 64-bit Linux architecture)");

#endif
