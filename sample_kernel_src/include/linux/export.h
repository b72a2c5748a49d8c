/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_EXPORT_H
#define _LINUX_EXPORT_H

/*
 * Symbol exports are meaningless without a module loader; keep the
 * annotation in the source but reduce it to a harmless redeclaration.
 */
#define EXPORT_SYMBOL(sym)		extern __typeof__(sym) sym
#define EXPORT_SYMBOL_GPL(sym)		extern __typeof__(sym) sym

#endif /* _LINUX_EXPORT_H */
