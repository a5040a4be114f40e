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
static __always_inline __u32 ct_time_ns(struct nsproxy *nsp)
{
	if (bpf_core_field_exists(nsp->time_ns))
		return BPF_CORE_READ(nsp, time_ns, ns.inum);
	return 0;
}

static __always_inline __u32 ct_time_ns_for_children(struct nsproxy *nsp)
{
	if (bpf_core_field_exists(nsp->time_ns_for_children))
		return BPF_CORE_READ(nsp, time_ns_for_children, ns.inum);
	return 0;
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
 * The pid namespace a task lives in, as /proc/PID/ns/pid shows it:
 * task_active_pid_ns() = ns_of_pid(task_pid(t)), the namespace at the pid's
 * own level.  Not nsproxy->pid_ns_for_children, which unshare(CLONE_NEWPID)
 * changes for the children only.  struct upid has been {nr, ns} since 2.6.24.
 */
static __always_inline void ct_pid_at_level(struct pid *pid, __u32 *nr, __u32 *ns_inum)
{
	struct upid up = {};
	unsigned int level = BPF_CORE_READ(pid, level);

	bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
	*nr = up.nr;
	*ns_inum = BPF_CORE_READ(up.ns, ns.inum);
}

#endif /* CTRTRACE_COMPAT_BPF_H */
