/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_STATIC_CALL_H
#define _LINUX_STATIC_CALL_H

/*
 * Simplified static calls.  Real static calls patch the call site; here
 * each static call is an ordinary function-pointer variable named
 * __SCT__<name>, so static_call(foo)(args) is an indirect call through
 * __SCT__foo.
 *
 * @func is any expression of the target function type; it is only used
 * inside __typeof__ and is never evaluated.
 */
#define DECLARE_STATIC_CALL(name, func)					\
	extern __typeof__(func) *__SCT__##name

#define DEFINE_STATIC_CALL_NULL(name, func)				\
	__typeof__(func) *__SCT__##name

#define static_call(name)		(__SCT__##name)

#define static_call_update(name, func)					\
	((void)(__SCT__##name = (func)))

#endif /* _LINUX_STATIC_CALL_H */
