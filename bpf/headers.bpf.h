/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The bcc build's kernel structs from the running kernel's own headers:
 * bcc's native way, for a kernel without BTF (tracer/kernel/bcc.py takes it
 * only when the headers are that kernel's).  What ct_kernel.h says from BTF
 * -- which fields this kernel has, where the bitfields are, an enum's value --
 * is said here from the headers' version and configuration; each line names
 * the kernel change it follows, as compat.bpf.h does.
 */
#ifndef CTRTRACE_HEADERS_BPF_H
#define CTRTRACE_HEADERS_BPF_H

#include <linux/version.h>
#include <linux/kconfig.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/cred.h>
#include <linux/nsproxy.h>
#include <linux/pid_namespace.h>
#include <linux/user_namespace.h>
#include <linux/utsname.h>
#include <linux/ipc_namespace.h>
#include <net/net_namespace.h>
#include <linux/cgroup.h>
#include <linux/cgroup-defs.h>
#include <linux/kernfs.h>
#include <linux/mm_types.h>
#include <linux/binfmts.h>
#include <asm/ptrace.h>
#include <asm/processor.h>
#if IS_ENABLED(CONFIG_TIME_NS)
#include <linux/time_namespace.h>
#endif

/*
 * fs/mount.h, which headers packages leave out: the namespace's ns_common
 * is all that is read.  Its refcount moved into ns_common in 5.11
 * (1a7b8969e664 "ns: Add common refcount into ns_common").
 */
struct mnt_namespace {
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 11, 0)
	atomic_t count;
#endif
	struct ns_common ns;
};

/* time namespaces: 5.6, and only with CONFIG_TIME_NS */
#define CT_HAS_nsproxy_time_ns IS_ENABLED(CONFIG_TIME_NS)
/* kernfs_node.parent became __parent in 6.15 (633488947ef6) */
#define CT_HAS_kernfs_node___parent (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 15, 0))
/* signal->thread_head and task->thread_node since 6.7 (8e1f385104ac) */
#define CT_HAS_signal_struct_thread_head (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0))
#if IS_ENABLED(CONFIG_MEMCG)
#define CT_ENUM_memory_cgrp_id memory_cgrp_id
#else
#define CT_ENUM_memory_cgrp_id (-1)
#endif
/* the subreaper bits are the first bitfields after signal->core_state (since
 * 3.x; tests/test_bcc_backend.py checks it against BTF) */
#define CT_BITFIELD_is_child_subreaper \
	(__builtin_offsetof(struct signal_struct, core_state) + sizeof(void *)) * 8, 1
#define CT_BITFIELD_has_child_subreaper \
	(__builtin_offsetof(struct signal_struct, core_state) + sizeof(void *)) * 8 + 1, 1

#endif /* CTRTRACE_HEADERS_BPF_H */
