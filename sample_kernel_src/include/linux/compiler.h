/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_COMPILER_H
#define _LINUX_COMPILER_H

/* Branch prediction hints. */
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)

#define __always_inline		inline __attribute__((__always_inline__))
#define __maybe_unused		__attribute__((__unused__))
#define __must_check		__attribute__((__warn_unused_result__))
#define __cold			__attribute__((__cold__))
#define __read_mostly

/* Token pasting that expands its arguments first. */
#define ___PASTE(a, b)		a##b
#define __PASTE(a, b)		___PASTE(a, b)

/* A file-unique identifier, used for hidden guard variables. */
#define __UNIQUE_ID(prefix)	__PASTE(__PASTE(__UNIQUE_ID_, prefix), __COUNTER__)

/*
 * Force a single, non-torn access to a shared variable.  The volatile
 * cast stops the compiler from caching, merging or re-reading the value.
 */
#define READ_ONCE(x)		(*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, val)						\
do {									\
	*(volatile __typeof__(x) *)&(x) = (val);			\
} while (0)

#define barrier()		__asm__ __volatile__("" : : : "memory")

#endif /* _LINUX_COMPILER_H */
