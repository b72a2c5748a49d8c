/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_MUTEX_H
#define _LINUX_MUTEX_H

#include <linux/types.h>
#include <linux/atomic.h>
#include <linux/cleanup.h>

/* Sleeping mutual-exclusion lock; implemented outside the sample tree. */
struct mutex {
	atomic_t owner;
	void *wait_list;
};

extern void mutex_init(struct mutex *lock);
extern void mutex_lock(struct mutex *lock);
extern void mutex_unlock(struct mutex *lock);
extern int mutex_trylock(struct mutex *lock);

DEFINE_GUARD(mutex, struct mutex *, mutex_lock(_T), mutex_unlock(_T))

#endif /* _LINUX_MUTEX_H */
