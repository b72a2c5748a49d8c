/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_TYPES_H
#define _LINUX_TYPES_H

/* Fixed-width integer types, x86-64 LP64 model. */
typedef unsigned char		u8;
typedef unsigned short		u16;
typedef unsigned int		u32;
typedef unsigned long long	u64;
typedef signed char		s8;
typedef short			s16;
typedef int			s32;
typedef long long		s64;

/* The same widths as seen by the user ABI. */
typedef u8			__u8;
typedef u16			__u16;
typedef u32			__u32;
typedef u64			__u64;

typedef _Bool			bool;
#define true			1
#define false			0

#ifndef NULL
#define NULL			((void *)0)
#endif

typedef unsigned long		size_t;
typedef long			ssize_t;
typedef unsigned long		uintptr_t;

/* Guest physical and virtual addresses. */
typedef u64			gpa_t;
typedef u64			gva_t;
typedef u64			gfn_t;

/* See <linux/atomic.h> for the accessors. */
typedef struct {
	int counter;
} atomic_t;

#endif /* _LINUX_TYPES_H */
