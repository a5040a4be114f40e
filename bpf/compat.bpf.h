/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-version differences, all in one place: fields that later kernels
 * renamed, moved or added, and those a kernel's configuration leaves out,
 * each read with CO-RE so that one object runs on all of them.  Each helper
 * says which kernel change it follows, so that the programs themselves stay
 * plain.  (The architecture's syscall numbers and registers are in
 * arch.bpf.h; the walks over a task's threads and ancestors in tasks.bpf.h.)
 *
 * Under bcc (build.bpf.h) there is nothing to relocate: the structs are
 * declared as the running kernel has them, and CT_HAS_<struct>_<field> says
 * which of the fields below it has (ct_kernel.h, from its BTF or from the
 * version of its headers), CT_ENUM_<name> an enum value (-1: none).
 */
#ifndef CTRTRACE_COMPAT_BPF_H
#define CTRTRACE_COMPAT_BPF_H

#include "build.bpf.h"

/*
 * Time namespaces arrived in 5.6 (769071ac9f20 "ns: Introduce Time
 * Namespace"); on older kernels, or with CONFIG_TIME_NS=n, the nsproxy has no
 * time_ns fields and every task shares the one initial time namespace, which
 * we report as 0 ("unknown").
 */
#if !defined(CT_BCC) || CT_HAS_nsproxy_time_ns
static __always_inline __u32 ct_time_ns(const struct nsproxy *nsp)
{
	if (bpf_core_field_exists(nsp->time_ns))
		return BPF_CORE_READ(nsp->time_ns, ns.inum);
	return 0;
}

static __always_inline __u32 ct_time_ns_for_children(const struct nsproxy *nsp)
{
	if (bpf_core_field_exists(nsp->time_ns_for_children))
		return BPF_CORE_READ(nsp->time_ns_for_children, ns.inum);
	return 0;
}
#else
#define ct_time_ns(nsp) 0
#define ct_time_ns_for_children(nsp) 0
#endif

/*
 * A task's nsproxy, copied whole in one read: its namespace pointers are
 * then plain loads from the copy (the field offsets are relocated as for any
 * other read), rather than a helper call each.  The copy is read at the
 * running kernel's size of the struct; CT_NSPROXY_MAX leaves room for fields
 * later kernels add.
 */
#define CT_NSPROXY_MAX 128

union ct_nsproxy_copy {
	struct nsproxy p;
	__u8 raw[CT_NSPROXY_MAX];
};

static __always_inline long ct_read_nsproxy(struct nsproxy *src, union ct_nsproxy_copy *dst)
{
	__u32 size = CT_TYPE_SIZE(struct nsproxy);

	if (size > CT_NSPROXY_MAX)
		size = CT_NSPROXY_MAX;
	return bpf_probe_read_kernel(dst, size, src);
}

/*
 * Is the exiting task the last of its thread group?  Since 6.16
 * (sched_process_exit gained a "group_dead" argument) the tracepoint says so
 * itself, but earlier kernels do not.  do_exit() has always decremented
 * signal->live before firing the tracepoint, so reading it works on every
 * kernel and keeps one program for all of them.
 */
static __always_inline bool ct_group_dead(struct task_struct *t)
{
	return BPF_CORE_READ(t, signal, live.counter) == 0;
}

/*
 * kernfs_node's parent pointer was renamed to __parent in 6.15 (633488947ef6
 * "kernfs: Use RCU to access kernfs_node::parent").  Both spellings are
 * declared here as flavors, so the object builds against either vmlinux.h
 * and relocates on either kernel.
 */
#ifndef CT_BCC
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *ct_kn_parent(struct kernfs_node *kn)
{
	struct kernfs_node___new *n = (void *)kn;
	struct kernfs_node___old *o = (void *)kn;

	if (bpf_core_field_exists(n->__parent))
		return BPF_CORE_READ(n, __parent);
	return BPF_CORE_READ(o, parent);
}
#elif CT_HAS_kernfs_node___parent
#define ct_kn_parent(kn) BPF_CORE_READ(kn, __parent)
#else
#define ct_kn_parent(kn) BPF_CORE_READ(kn, parent)
#endif

/*
 * The task's cgroup: its place in the v2 (unified) hierarchy when it has one
 * below the root, else its place in a v1 hierarchy.  On a pure v1 host the
 * unified hierarchy is unused and every task sits at its root.  The memory
 * controller is the one v1 hierarchy that container runtimes always place
 * their tasks in; the enum value is relocated, as controller ids depend on
 * the kernel's configuration.
 */
static __always_inline struct kernfs_node *ct_cgroup_kn(struct task_struct *t, bool *v1)
{
	struct css_set *cset = BPF_CORE_READ(t, cgroups);
	struct cgroup *cg = BPF_CORE_READ(cset, dfl_cgrp);
	int id;

	*v1 = false;
	if (cg && BPF_CORE_READ(cg, level) > 0)
		return BPF_CORE_READ(cg, kn);
#ifndef CT_BCC
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return cg ? BPF_CORE_READ(cg, kn) : NULL;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
#else
	id = CT_ENUM_memory_cgrp_id;
	if (id < 0)
		return cg ? BPF_CORE_READ(cg, kn) : NULL;
#endif
	if (id < 0 || id >= 16)
		return NULL;
	cg = BPF_CORE_READ(cset, subsys[id], cgroup);
	*v1 = true;
	return cg ? BPF_CORE_READ(cg, kn) : NULL;
}

/*
 * Where a thread group's threads are listed.  Since 6.7 (8e1f385104ac "kill
 * task_struct->thread_group") they are on signal->thread_head via
 * task->thread_node; before, they were a ring through task->thread_group.
 * That ring has no head of its own: a walk from a thread's node back to it
 * never looks at that thread.
 */
#ifndef CT_BCC
struct signal_struct___new {
	struct list_head thread_head;
} __attribute__((preserve_access_index));

struct task_struct___new {
	struct list_head thread_node;
} __attribute__((preserve_access_index));

struct task_struct___old {
	struct list_head thread_group;
} __attribute__((preserve_access_index));
#endif

struct ct_thread_list {
	struct list_head *head;   /* a walk ends on coming back here */
	struct list_head *first;  /* the first node it looks at */
	unsigned long off;        /* of the list node in task_struct */
};

/* The list of p's thread group; true when a walk of it leaves p out. */
#ifndef CT_BCC
static __always_inline bool ct_thread_list(struct task_struct *p, struct ct_thread_list *l)
{
	struct signal_struct___new *sig = (void *)BPF_CORE_READ(p, signal);
	struct task_struct___old *o = (void *)p;

	if (bpf_core_field_exists(sig->thread_head)) {
		l->head = &sig->thread_head;
		l->first = BPF_CORE_READ(sig, thread_head.next);
		l->off = bpf_core_field_offset(struct task_struct___new, thread_node);
		return false;
	}
	l->head = &o->thread_group;
	l->first = BPF_CORE_READ(o, thread_group.next);
	l->off = bpf_core_field_offset(struct task_struct___old, thread_group);
	return true;
}
#elif CT_HAS_signal_struct_thread_head
static __always_inline bool ct_thread_list(struct task_struct *p, struct ct_thread_list *l)
{
	struct signal_struct *sig = BPF_CORE_READ(p, signal);

	l->head = &sig->thread_head;
	l->first = BPF_CORE_READ(sig, thread_head.next);
	l->off = offsetof(struct task_struct, thread_node);
	return false;
}
#else
static __always_inline bool ct_thread_list(struct task_struct *p, struct ct_thread_list *l)
{
	l->head = &p->thread_group;
	l->first = BPF_CORE_READ(p, thread_group.next);
	l->off = offsetof(struct task_struct, thread_group);
	return true;
}
#endif

#endif /* CTRTRACE_COMPAT_BPF_H */
