/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_KCONFIG_H
#define _LINUX_KCONFIG_H

/*
 * Minimal configuration for the sample tree.  A real build generates
 * these from .config; here they are fixed so that every translation
 * unit sees the same view of the world.
 */
#define CONFIG_X86		1
#define CONFIG_X86_64		1
#define CONFIG_KVM		1
#define CONFIG_KVM_X86		1
#define CONFIG_KVM_AMD		1
#define CONFIG_KVM_HYPERV	1

/*
 * IS_ENABLED(CONFIG_FOO) evaluates to 1 if CONFIG_FOO is defined to 1 and
 * to 0 if it is undefined, and is usable both in C expressions and in
 * preprocessor conditionals.
 *
 * The option is expanded first, then glued onto a probe prefix.  Only
 * __kc_probe_1 is itself a macro, and it expands to "0," which shifts
 * the literal 1 into the second argument slot of __kc_second().  For
 * any other spelling the probe stays a single token and the default 0
 * is picked instead.
 */
#define __kc_probe_1			0,
#define __kc_second(a, b, ...)		b
#define __kc_select(probe)		__kc_second(probe 1, 0, 0)
#define __kc_glue(x)			__kc_select(__kc_probe_##x)
#define __kc_one(x)			__kc_glue(x)

#define IS_BUILTIN(option)		__kc_one(option)
#define IS_ENABLED(option)		__kc_one(option)

#endif /* _LINUX_KCONFIG_H */
