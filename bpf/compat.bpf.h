/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-version differences, all in one place.  Each helper says which
 * kernel change it follows, so that the programs themselves stay plain.
 */
#ifndef CTRTRACE_COMPAT_BPF_H
#define CTRTRACE_COMPAT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Time namespaces arrived in 5.6 (769071ac9f20 "ns: Introduce Time
 * Namespace"); on older kernels, or with CONFIG_TIME_NS=n, the nsproxy has no
 * time_ns fields and every task shares the one initial time namespace, which
 * we report as 0 ("unknown").
 */
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
	__u32 size = bpf_core_type_size(struct nsproxy);

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
 * A pid's number and namespace at its own level: the namespace is the one a
 * task lives in, as /proc/PID/ns/pid shows it, task_active_pid_ns() =
 * ns_of_pid(task_pid(t)), and the number is the task's pid there.  Not
 * nsproxy->pid_ns_for_children, which unshare(CLONE_NEWPID) changes for the
 * children only.  struct upid has been {nr, ns} since 2.6.24.
 */
static __always_inline struct upid ct_pid_at_level(struct pid *pid)
{
	struct upid up = {};
	unsigned int level = BPF_CORE_READ(pid, level);

	bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
	return up;
}

/*
 * kernfs_node's parent pointer was renamed to __parent in 6.15 (633488947ef6
 * "kernfs: Use RCU to access kernfs_node::parent").  Both spellings are
 * declared here as flavors, so the object builds against either vmlinux.h
 * and relocates on either kernel.
 */
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
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return cg ? BPF_CORE_READ(cg, kn) : NULL;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	if (id < 0 || id >= 16)
		return NULL;
	cg = BPF_CORE_READ(cset, subsys[id], cgroup);
	*v1 = true;
	return cg ? BPF_CORE_READ(cg, kn) : NULL;
}

/*
 * Does any thread of the group still have children?  Children hang on the
 * thread that forked them, and threads of an exiting group reach the exit
 * tracepoint before all of them have handed their children on, so every
 * thread is looked at.  Since 6.7 (8e1f385104ac "kill task_struct->thread_group")
 * threads are on signal->thread_head via task->thread_node; before, they were
 * a ring through task->thread_group.  Past CT_THREADS_MAX threads the answer
 * is "yes": a reaper named needlessly is better than children lost.
 */
#define CT_THREADS_MAX 64

struct signal_struct___new {
	struct list_head thread_head;
} __attribute__((preserve_access_index));

struct task_struct___new {
	struct list_head thread_node;
} __attribute__((preserve_access_index));

struct task_struct___old {
	struct list_head thread_group;
} __attribute__((preserve_access_index));

static __always_inline bool ct_has_children(struct task_struct *t)
{
	return BPF_CORE_READ(t, children.next) != &t->children;
}

/*
 * The walks below go through bpf_loop (5.17+; the failed-exec argv read
 * needs it too): the verifier checks a callback once, where it would walk an
 * open loop's every iteration -- the exit program's bounds (CT_THREADS_MAX
 * threads, CT_REAPER_DEPTH ancestors) made it much longer to verify
 * (bench/README.md).  Inside a callback, fields of the context are copied to
 * locals before BPF_CORE_READ, which would take them for kernel fields to
 * relocate.
 */
struct ct_threads_walk {
	struct list_head *head;
	struct list_head *pos;
	unsigned long off;  /* of the list node in task_struct */
	bool children;      /* the answer; stays true past CT_THREADS_MAX threads */
};

static long ct_thread_step(__u32 i, void *data)
{
	struct ct_threads_walk *w = data;
	struct list_head *pos = w->pos;

	if (pos == w->head) {
		w->children = false;
		return 1;
	}
	if (ct_has_children((struct task_struct *)((void *)pos - w->off)))
		return 1;
	w->pos = BPF_CORE_READ(pos, next);
	return 0;
}

static __always_inline bool ct_group_has_children(struct task_struct *p)
{
	struct signal_struct___new *sig = (void *)BPF_CORE_READ(p, signal);
	struct ct_threads_walk w = { .children = true };

	if (bpf_core_field_exists(sig->thread_head)) {
		w.head = &sig->thread_head;
		w.pos = BPF_CORE_READ(sig, thread_head.next);
		w.off = bpf_core_field_offset(struct task_struct___new, thread_node);
	} else {
		struct task_struct___old *o = (void *)p;

		if (ct_has_children(p))
			return true;
		w.head = &o->thread_group;
		w.pos = BPF_CORE_READ(o, thread_group.next);
		w.off = bpf_core_field_offset(struct task_struct___old, thread_group);
	}
	bpf_loop(CT_THREADS_MAX, ct_thread_step, &w, 0);
	return w.children;
}

/*
 * Who adopts the children of an exiting process, as find_new_reaper() in
 * kernel/exit.c decides it just after the exit tracepoint: the nearest
 * ancestor in the same pid namespace that is a child subreaper (if any
 * ancestor declared one), else the namespace's init.  0 when the exiting
 * process is that init itself (the namespace ends; its children are killed).
 */
#define CT_REAPER_DEPTH 16

struct ct_reaper_walk {
	struct task_struct *task;  /* the ancestor to look at next */
	unsigned int level;        /* the exiting process's pid namespace level */
	__u32 tgid;                /* the subreaper found, or 0 */
};

static long ct_reaper_step(__u32 i, void *data)
{
	struct ct_reaper_walk *w = data;
	struct task_struct *t = w->task;
	struct signal_struct *sig;

	if (!t || BPF_CORE_READ(t, pid) == 0)  /* init_task */
		return 1;
	if (BPF_CORE_READ(t, thread_pid, level) != w->level)
		return 1;
	sig = BPF_CORE_READ(t, signal);
	if (BPF_CORE_READ_BITFIELD_PROBED(sig, is_child_subreaper) &&
	    BPF_CORE_READ(sig, live.counter) > 0) {
		w->tgid = BPF_CORE_READ(t, tgid);
		return 1;
	}
	w->task = BPF_CORE_READ(t, real_parent);
	return 0;
}

static __always_inline __u32 ct_new_reaper(struct task_struct *father)
{
	struct signal_struct *sig = BPF_CORE_READ(father, signal);
	struct pid *fpid = BPF_CORE_READ(father, thread_pid);
	unsigned int level = BPF_CORE_READ(fpid, level);
	struct task_struct *init;
	struct upid up = {};

	if (BPF_CORE_READ_BITFIELD_PROBED(sig, has_child_subreaper)) {
		struct ct_reaper_walk w = { .task = BPF_CORE_READ(father, real_parent), .level = level };

		bpf_loop(CT_REAPER_DEPTH, ct_reaper_step, &w, 0);
		if (w.tgid)
			return w.tgid;
	}
	bpf_core_read(&up, sizeof(up), &fpid->numbers[level]);
	init = BPF_CORE_READ(up.ns, child_reaper);
	if (!init || BPF_CORE_READ(init, tgid) == BPF_CORE_READ(father, tgid))
		return 0;
	return BPF_CORE_READ(init, tgid);
}

/*
 * The syscall the current task is in, read from the registers it entered the
 * kernel with (bpf_task_pt_regs, 5.15): a fork's clone flags and a failed
 * exec's arguments are there, so no program needs to run at the entry of
 * clone or exec.  The numbers and the registers are the architecture's; only
 * native calls count -- a 32-bit task's numbers differ, and the syscall
 * tracepoints leave its calls out as well.  A kernel thread is in no syscall.
 * (x86 runs in the tests; arm64's numbers are the generic table's, from
 * include/uapi/asm-generic/unistd.h, where fork and vfork do not exist.)
 */
#define CT_PF_KTHREAD 0x00200000  /* include/linux/sched.h */

#if defined(__TARGET_ARCH_x86)
#define CT_NR_CLONE   56
#define CT_NR_FORK    57
#define CT_NR_VFORK   58
#define CT_NR_CLONE3  435
#define CT_TS_COMPAT  0x0002      /* arch/x86/include/asm/thread_info.h */
#define ct_compat_task(t) (BPF_CORE_READ(t, thread_info.status) & CT_TS_COMPAT)
#define ct_regs_nr(regs)  ((long)BPF_CORE_READ(regs, orig_ax))
#elif defined(__TARGET_ARCH_arm64)
#define CT_NR_CLONE   220
#define CT_NR_FORK    (-2)
#define CT_NR_VFORK   (-3)
#define CT_NR_CLONE3  435
#define CT_TIF_32BIT  22          /* arch/arm64/include/asm/thread_info.h */
#define ct_compat_task(t) (BPF_CORE_READ(t, thread_info.flags) & (1UL << CT_TIF_32BIT))
#define ct_regs_nr(regs)  ((long)BPF_CORE_READ(regs, syscallno))
#else
#error "ctrtrace knows the syscall registers of x86 and arm64"
#endif

static __always_inline struct pt_regs *ct_syscall_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* The current task's native syscall number, or -1. */
static __always_inline long ct_current_syscall(struct pt_regs **regs)
{
	struct task_struct *t = bpf_get_current_task_btf();

	*regs = (struct pt_regs *)bpf_task_pt_regs(t);
	if ((BPF_CORE_READ(t, flags) & CT_PF_KTHREAD) || ct_compat_task(t))
		return -1;
	return ct_regs_nr(*regs);
}

#endif /* CTRTRACE_COMPAT_BPF_H */
