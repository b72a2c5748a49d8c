/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_CLEANUP_H
#define _LINUX_CLEANUP_H

#include <linux/compiler.h>

/*
 * Scope-based lock guards.
 *
 * DEFINE_GUARD(name, type, lock, unlock) creates a "class" made of a
 * typedef, a constructor that runs @lock and returns the lock pointer,
 * and a destructor that runs @unlock.  Inside @lock and @unlock the lock
 * pointer is spelled _T.
 *
 * guard(name)(args) then declares a hidden local of that class whose
 * destructor is attached with __attribute__((cleanup)), so the lock is
 * dropped on every path that leaves the enclosing scope:
 *
 *	guard(rwsem_write)(&kvm->arch.apicv_update_lock);
 */
#define DEFINE_GUARD(_name, _type, _lock, _unlock)			\
typedef _type class_##_name##_t;					\
static inline class_##_name##_t class_##_name##_constructor(_type _T)	\
{									\
	_lock;								\
	return _T;							\
}									\
static inline void class_##_name##_destructor(class_##_name##_t *_Tp)	\
{									\
	_type _T = *_Tp;						\
	_unlock;							\
}

#define guard(_name)							\
	class_##_name##_t						\
	__attribute__((cleanup(class_##_name##_destructor)))		\
	__UNIQUE_ID(guard) = class_##_name##_constructor

/*
 * scoped_guard(name, args...) { ... } holds the lock for the block only:
 * the guard variable is declared in a one-iteration for loop.
 */
#define scoped_guard(_name, _arg)					\
	for (class_##_name##_t						\
	     scope __attribute__((cleanup(class_##_name##_destructor))) =	\
	     class_##_name##_constructor(_arg), *done = NULL;		\
	     !done; done = (void *)1)

#endif /* _LINUX_CLEANUP_H */
