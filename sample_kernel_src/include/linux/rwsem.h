/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_RWSEM_H
#define _LINUX_RWSEM_H

#include <linux/types.h>
#include <linux/atomic.h>
#include <linux/cleanup.h>

/*
 * Reader/writer semaphore.  The implementation lives outside of the
 * sample tree; only the interface matters for the callers here.
 */
struct rw_semaphore {
	atomic_t count;
	void *owner;
};

extern void init_rwsem(struct rw_semaphore *sem);
extern void down_read(struct rw_semaphore *sem);
extern void up_read(struct rw_semaphore *sem);
extern void down_write(struct rw_semaphore *sem);
extern void up_write(struct rw_semaphore *sem);
extern int down_write_trylock(struct rw_semaphore *sem);

DEFINE_GUARD(rwsem_read, struct rw_semaphore *, down_read(_T), up_read(_T))
DEFINE_GUARD(rwsem_write, struct rw_semaphore *, down_write(_T), up_write(_T))

#endif /* _LINUX_RWSEM_H */
