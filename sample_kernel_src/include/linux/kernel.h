/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_KERNEL_H
#define _LINUX_KERNEL_H

#include <linux/types.h>
#include <linux/compiler.h>

/*
 * container_of - get the enclosing structure from a pointer to a member
 * @ptr:	pointer to the member
 * @type:	type of the enclosing structure
 * @member:	name of the member within @type
 */
#define container_of(ptr, type, member)					\
	((type *)((char *)(ptr) - __builtin_offsetof(type, member)))

#define ARRAY_SIZE(arr)		(sizeof(arr) / sizeof((arr)[0]))

#define min(a, b)		((a) < (b) ? (a) : (b))
#define max(a, b)		((a) > (b) ? (a) : (b))

/* Error numbers used by the sample tree. */
#define EPERM			1
#define ENOENT			2
#define EIO			5
#define ENOMEM			12
#define EFAULT			14
#define EBUSY			16
#define EINVAL			22
#define ENOTTY			25
#define EOPNOTSUPP		95

#endif /* _LINUX_KERNEL_H */
