/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A task's place among the others: its pid in its own pid namespace, whether
 * its thread group still has children, and who adopts them when it exits.
 * Where a kernel version keeps these differently, compat.bpf.h says where.
 */
#ifndef CTRTRACE_TASKS_BPF_H
#define CTRTRACE_TASKS_BPF_H

#include "build.bpf.h"
#include "compat.bpf.h"

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
 * The reads below do not branch on what they read (one branch: where a
 * map keeps its extents): every record carries them, and the verifier
 * follows both sides of a branch through everything after it until their
 * states meet; under bcc (no bpf_loop) that is every turn of the
 * failed-exec argv loop.  CT_SELECT(mask, a, b) is a when mask is all
 * ones, b when it is zero; ct_below(x, y) the mask of x < y.  The compiler
 * is kept from seeing the comparison in the mask (CT_OPAQUE): it would make
 * it a branch again.
 */
#define CT_OPAQUE(x) asm volatile("" : "+r"(x))
#define CT_SELECT(mask, a, b) (((a) & (mask)) | ((b) & ~(mask)))

static __always_inline __u64 ct_below(__u32 x, __u32 y)
{
	__u64 d = (__u64)x - (__u64)y;
	__u64 mask;

	CT_OPAQUE(d);
	mask = (__u64)((__s64)d >> 63);
	CT_OPAQUE(mask);
	return mask;
}

/*
 * The pid's numbers between the host's level and its own: numbers[1] ..
 * numbers[level - 1] (numbers[0] is the host's pid, numbers[level] the one
 * ct_pid_at_level() reads), as /proc/PID/status lists them in NSpid.  Past
 * level - 1, numbers[level] is read and dropped: never past the array.
 */
static __always_inline void ct_pids_between(struct pid *pid, unsigned int level, __u32 *out)
{
	int i;

	for (i = 1; i <= CT_PID_LEVELS_BETWEEN; i++) {
		__u64 inside = ct_below(i, level);
		__u32 at = CT_SELECT(inside, i, level);
		__u32 nr = 0;

		bpf_core_read(&nr, sizeof(nr), &pid->numbers[at].nr);
		out[i - 1] = CT_SELECT(inside, nr, 0);
	}
}

/*
 * An id as a user namespace's map gives it (the kernel's map_id_up(), what
 * from_kuid() answers): the map's extents hold kernel ids (lower_first) and
 * the namespace's own (first); extents never overlap.  Up to
 * UID_GID_MAP_MAX_BASE_EXTENTS (5) they are in the map itself (the unused
 * ones zero: the namespace is allocated zeroed); past them, in an array
 * sorted by lower_first (at most UID_GID_MAP_MAX_EXTENTS, 340: a binary
 * search of nine halvings).
 */
#define CT_MAP_BASE_EXTENTS 5
#define CT_MAP_HALVINGS 9

/* found, or the id extent e maps kid to; below: the mask of kid < e's first kernel id */
static __always_inline __u32 ct_extent_up(const struct uid_gid_extent *e, __u32 kid,
					  __u32 found, __u64 *below)
{
	__u32 first = BPF_CORE_READ(e, first);
	__u32 lower = BPF_CORE_READ(e, lower_first);
	__u32 count = BPF_CORE_READ(e, count);
	__u32 off = kid - lower;

	*below = ct_below(kid, lower);
	return CT_SELECT(ct_below(off, count), first + off, found);
}

static __always_inline __u32 ct_map_id_up(const struct uid_gid_map *map, __u32 kid)
{
	__u32 n = BPF_CORE_READ(map, nr_extents);
	const struct uid_gid_extent *sorted;
	__u32 id = CT_ID_UNMAPPED;
	__u64 below;
	__u32 lo = 0, hi = n;
	int i;

	if (n <= CT_MAP_BASE_EXTENTS) {
		for (i = 0; i < CT_MAP_BASE_EXTENTS; i++)
			id = ct_extent_up(&map->extent[i], kid, id, &below);
		return id;
	}
	sorted = BPF_CORE_READ(map, reverse);
	for (i = 0; i < CT_MAP_HALVINGS; i++) {
		__u64 open = ct_below(lo, hi);  /* an empty range reads [0], and keeps nothing */
		__u32 mid = CT_SELECT(open, (lo + hi) / 2, 0);

		id = CT_SELECT(open, ct_extent_up(&sorted[mid], kid, id, &below), id);
		hi = CT_SELECT(open & below, mid, hi);
		lo = CT_SELECT(open & ~below, mid + 1, lo);
	}
	return id;
}

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

/*
 * Does any thread of the group still have children?  Children hang on the
 * thread that forked them, and threads of an exiting group reach the exit
 * tracepoint before all of them have handed their children on, so every
 * thread is looked at (the list is ct_thread_list's).  Past CT_THREADS_MAX
 * threads the answer is "yes": a reaper named needlessly is better than
 * children lost.
 */
#define CT_THREADS_MAX 64

struct ct_threads_walk {
	struct list_head *head;
	struct list_head *pos;
	unsigned long off;  /* of the list node in task_struct */
	bool children;      /* the answer; stays true past CT_THREADS_MAX threads */
};

CT_LOOP_STEP ct_thread_step(__u32 i, void *data)
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
	struct ct_thread_list l;
	struct ct_threads_walk w = { .children = true };

	/* a walk that leaves p out: p is looked at here */
	if (ct_thread_list(p, &l) && ct_has_children(p))
		return true;
	w.head = l.head;
	w.pos = l.first;
	w.off = l.off;
	CT_LOOP(CT_THREADS_MAX, ct_thread_step, &w);
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

CT_LOOP_STEP ct_reaper_step(__u32 i, void *data)
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

		CT_LOOP(CT_REAPER_DEPTH, ct_reaper_step, &w);
		if (w.tgid)
			return w.tgid;
	}
	bpf_core_read(&up, sizeof(up), &fpid->numbers[level]);
	init = BPF_CORE_READ(up.ns, child_reaper);
	if (!init || BPF_CORE_READ(init, tgid) == BPF_CORE_READ(father, tgid))
		return 0;
	return BPF_CORE_READ(init, tgid);
}

#endif /* CTRTRACE_TASKS_BPF_H */
