// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ctrtrace: process lifecycle and namespace changes, read in the kernel at
 * the moment each event happens.
 *
 * Tracepoints only (kprobes may be compiled out): raw tracepoints for exec,
 * fork and exit, and the syscall tracepoints for what only the syscall
 * boundary knows (failed execs, setns/unshare arguments and results).  A
 * fork's clone flags and a failed exec's arguments are read from the
 * caller's registers (arch.bpf.h), so no program runs at the entry of
 * clone, fork or exec: those are the calls an exec storm makes.
 *
 * Raw rather than tp_btf: a tp_btf attach point makes libbpf parse the
 * kernel's whole BTF at every start, which the cached CO-RE subset
 * (tracer/kernel/corebtf.py) otherwise avoids.  Fields are read with
 * BPF_CORE_READ: direct loads through tp_btf's typed pointers (or through
 * bpf_get_current_task_btf() in exec and exit only) run faster per exec, but
 * take the verifier far longer to check, and start-up waits for it
 * (bench/README.md, "Where the code's choices come from").
 */
#include "build.bpf.h"
#include "ctrtrace.h"
#include "compat.bpf.h"
#include "arch.bpf.h"
#include "tasks.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Values from the uapi headers (vmlinux.h has types, not macros). */
#define SIGCHLD         17
#define CLONE_VM        0x00000100
#define CLONE_VFORK     0x00004000
#define CLONE_THREAD    0x00010000
#define CT_CLONE_NEW_MASK 0x7e020080ULL /* NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET, NEWTIME below */
#define CLONE_NEWTIME   0x00000080

CT_CONFIG

/* what a setns or unshare entry leaves for its exit */
struct ns_call {
	struct ct_ns before;
	__u64 arg0;
	__u64 arg1;
};

/* The maps; under bcc, ctrtrace makes them as described here
 * (tracer/kernel/bcc.py, which a test holds to this) and they are named by
 * descriptor (build.bpf.h). */
#ifndef CT_BCC

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);  /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Scratch space for exec events, which are too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_exec_event);
} exec_heap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct ns_call);
} ns_calls SEC(".maps");

/* Children handed on by a thread that exited before its process did: a
 * thread's children go to a live sibling thread, but when every sibling is
 * already exiting (a Go program's threads exit together) they go straight to
 * the reaper, before the last thread's exit event could see them.  tgid ->
 * the reaper then, for that exit event.  A process that dies with no such
 * thread never gets an entry; an entry of one that was not traced ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} handed_on SEC(".maps");

/* --pid: the tgids followed, seeded by userspace, grown at fork. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u8);
} tracked SEC(".maps");

#endif /* !CT_BCC */

/* Keep every record type in the object's BTF for the layout test. */
struct ct_fork_event *unused_fork __attribute__((unused));
struct ct_exit_event *unused_exit __attribute__((unused));
struct ct_setns_event *unused_setns __attribute__((unused));
struct ct_unshare_event *unused_unshare __attribute__((unused));

/* ---- ablation -------------------------------------------------------------
 *
 * Variants of the programs for bench/ablate.py, which measures what a part of
 * the work costs the traced workload by building the object without it.  Each
 * switch is a macro given to clang (make -C bpf OUT=DIR CFLAGS_EXTRA=-D...);
 * the normal build defines none, and then nothing here makes any code.
 *
 * CT_ABLATE_RETURN_AT_ONCE: every program returns at CT_ABLATE_ENTRY, its
 * first statement (before the initialisers that read the task), but the one
 * CT_ABLATE_KEEP names (a CT_PROG_ number), if any.  CT_ABLATE_SPIN=N: that
 * one only counts N empty bpf_loop steps instead, reading and writing
 * nothing, to spend a set time in that program.
 *
 * The test that makes a program return reads the tunables: ignore_tgid is the
 * tracer's own pid, never 0xfffffffe, so the test is true once the object is
 * loaded but unknown to the compiler, which compiles the whole program; the
 * verifier, which reads the frozen rodata, then removes all but the return.
 * The maps, rodata and attach points stay those of the real object.
 */
#ifdef CT_ABLATE_RETURN_AT_ONCE
#define CT_PROG_EXEC           1
#define CT_PROG_EXIT_EXECVE    2
#define CT_PROG_EXIT_EXECVEAT  3
#define CT_PROG_FORK           4
#define CT_PROG_EXIT           5
#define CT_PROG_ENTER_SETNS    6
#define CT_PROG_ENTER_UNSHARE  7
#define CT_PROG_EXIT_SETNS     8
#define CT_PROG_EXIT_UNSHARE   9
#ifndef CT_ABLATE_KEEP
#define CT_ABLATE_KEEP 0
#endif
#define CT_ABLATE_LOADED (cfg.ignore_tgid != 0xfffffffe)
/* the constant comparison first: a program it leaves alone does not read cfg */
#define CT_ABLATE_RETURN(prog) \
	if ((prog) != CT_ABLATE_KEEP && CT_ABLATE_LOADED) \
		return 0;
#ifdef CT_ABLATE_SPIN
#if !CT_ABLATE_KEEP
#error "CT_ABLATE_SPIN spins in the program CT_ABLATE_KEEP names"
#endif
static long ct_ablate_step(__u32 i, void *n)
{
	(*(__u64 *)n)++;
	return 0;
}
#define CT_ABLATE_ENTRY(prog) \
	CT_ABLATE_RETURN(prog) \
	if ((prog) == CT_ABLATE_KEEP && CT_ABLATE_LOADED) { \
		__u64 n = 0; \
		bpf_loop(CT_ABLATE_SPIN, ct_ablate_step, &n, 0); \
		return n == 1;  /* 0 past one step: the count is used */ \
	}
#else
#define CT_ABLATE_ENTRY(prog) CT_ABLATE_RETURN(prog)
#endif
#else
#if defined(CT_ABLATE_KEEP) || defined(CT_ABLATE_SPIN)
#error "CT_ABLATE_KEEP and CT_ABLATE_SPIN go with CT_ABLATE_RETURN_AT_ONCE"
#endif
#define CT_ABLATE_ENTRY(prog)
#endif

/*
 * The records.  These switches redefine the ring-buffer helpers for the rest
 * of the file, so that the programs stay as they are; they tell the records
 * apart by helper: reserved in the ring buffer (fork, exit, setns, unshare)
 * or written with bpf_ringbuf_output (exec, failed exec).
 *
 * CT_ABLATE_SCRATCH_RECORDS: a reserved record is built in a per-CPU scratch
 * map instead, every read as usual, and is neither submitted nor discarded.
 * With it, CT_ABLATE_OUTPUT_SCRATCH: where it would be submitted, the record
 * is written from the scratch with bpf_ringbuf_output (the same record, one
 * copy more); CT_ABLATE_OUTPUT_SHORT: the same, 2 * CT_CGROUP_NAME_LEN bytes
 * short (the two cgroup names; its header still gives the whole size, so
 * ctrtrace cannot read it).
 * CT_ABLATE_NO_OUTPUT: bpf_ringbuf_output writes nothing and succeeds.
 */
#ifdef CT_ABLATE_SCRATCH_RECORDS
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, union {
		struct ct_fork_event fork;
		struct ct_exit_event exit;
		struct ct_setns_event setns;
		struct ct_unshare_event unshare;
	});
} ablate_scratch SEC(".maps");

#define bpf_ringbuf_reserve(ringbuf, size, flags) \
	((void *)bpf_map_lookup_elem(&ablate_scratch, &(__u32){0}))
#define bpf_ringbuf_discard(data, flags) ((void)0)
#if defined(CT_ABLATE_OUTPUT_SHORT)
#define bpf_ringbuf_submit(data, flags) \
	((void)bpf_ringbuf_output(CT_MAP(events), data, sizeof(*(data)) - 2 * CT_CGROUP_NAME_LEN, flags))
#elif defined(CT_ABLATE_OUTPUT_SCRATCH)
#define bpf_ringbuf_submit(data, flags) \
	((void)bpf_ringbuf_output(CT_MAP(events), data, sizeof(*(data)), flags))
#else
#define bpf_ringbuf_submit(data, flags) ((void)0)
#endif
#elif defined(CT_ABLATE_OUTPUT_SCRATCH) || defined(CT_ABLATE_OUTPUT_SHORT)
#error "CT_ABLATE_OUTPUT_SCRATCH and CT_ABLATE_OUTPUT_SHORT go with CT_ABLATE_SCRATCH_RECORDS"
#endif

#ifdef CT_ABLATE_NO_OUTPUT
#if defined(CT_ABLATE_OUTPUT_SCRATCH) || defined(CT_ABLATE_OUTPUT_SHORT)
#error "CT_ABLATE_NO_OUTPUT would take the scratch records' output too"
#endif
#define bpf_ringbuf_output(ringbuf, data, size, flags) 0
/* with no record written, rb_flags() may be left unused */
#pragma clang diagnostic ignored "-Wunused-function"
#endif

/* Flags 0 leave the wake-up to the kernel, which wakes the reader only for
 * the first record it has not yet seen: a lone event is read at once, and
 * while the reader is behind (it waits a little between drains, to batch)
 * nothing more is signalled.  The records that take the waiting data past
 * wakeup_bytes wake it regardless -- those few only (the window allows for
 * other CPUs' reservations in between): a wake-up per record, while the
 * reader sleeps out its batching pause, would cost the workload an IPI each. */
#define CT_WAKEUP_WINDOW 4096

static __always_inline __u64 rb_flags(void)
{
	__u64 avail = bpf_ringbuf_query(CT_MAP(events), BPF_RB_AVAIL_DATA);

	return avail >= cfg.wakeup_bytes && avail < cfg.wakeup_bytes + CT_WAKEUP_WINDOW ?
	       BPF_RB_FORCE_WAKEUP : 0;
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(CT_MAP(counters), &idx);

	if (v)
		*v += 1;
}

/*
 * What a task's namespaces hang on.  Tasks with the same three pointers are
 * in the same ten namespaces: the nsproxy holds eight, the user namespace is
 * the credentials', the pid namespace the pid's own.  Read once an event and
 * shared by the record and the comparison with the parent.
 */
struct ns_ids {
	struct nsproxy *nsproxy;
	struct user_namespace *user_ns;
	struct pid_namespace *pid_ns;
	__u32 vnr;  /* the pid's number in that pid namespace */
	__u32 level;  /* that namespace's depth: 0 = the host's */
};

/* pid: any of the process's thread pids, as all its threads share one pid
 * namespace; the group leader's gives the process's tgid there as vnr. */
static __always_inline void read_ns_ids(struct task_struct *t, const struct cred *cred,
					struct pid *pid, struct ns_ids *ids)
{
	struct upid up = ct_pid_at_level(pid);

	ids->nsproxy = BPF_CORE_READ(t, nsproxy);
	ids->user_ns = BPF_CORE_READ(cred, user_ns);
	ids->pid_ns = up.ns;
	ids->vnr = up.nr;
	ids->level = BPF_CORE_READ(pid, level);
}

static __always_inline void read_ns(const struct ns_ids *ids, struct ct_ns *ns, __u16 *flags)
{
	/* plain locals: inside BPF_CORE_READ, a field of our own struct would
	 * be taken for a kernel field to relocate */
	struct pid_namespace *pid_ns = ids->pid_ns;
	struct user_namespace *user_ns = ids->user_ns;
	union ct_nsproxy_copy copy;
	const struct nsproxy *nsp = &copy.p;

	/* records are not zeroed on reserve: 0 = unknown, never a stale value */
	__builtin_memset(ns, 0, sizeof(*ns));
	ns->pid = BPF_CORE_READ(pid_ns, ns.inum);
	ns->user = BPF_CORE_READ(user_ns, ns.inum);
	if (!ids->nsproxy) {
		*flags |= CT_F_NO_NSPROXY;
		return;
	}
	ct_read_nsproxy(ids->nsproxy, &copy);  /* zeroed if it fails: every inode 0 */
	ns->mnt = BPF_CORE_READ(nsp->mnt_ns, ns.inum);
	ns->uts = BPF_CORE_READ(nsp->uts_ns, ns.inum);
	ns->ipc = BPF_CORE_READ(nsp->ipc_ns, ns.inum);
	ns->pid_for_children = BPF_CORE_READ(nsp->pid_ns_for_children, ns.inum);
	ns->net = BPF_CORE_READ(nsp->net_ns, ns.inum);
	ns->cgroup = BPF_CORE_READ(nsp->cgroup_ns, ns.inum);
	ns->time = ct_time_ns(nsp);
	ns->time_for_children = ct_time_ns_for_children(nsp);
}

static __always_inline void read_cgroup(struct task_struct *t, struct ct_task *out, __u16 *flags)
{
	struct kernfs_node *kn, *parent;
	bool v1;

	out->cgroup_id = 0;
	/* whole buffers, not just [0]: the bytes after a name's NUL are part of
	 * the record too, and equal names must give equal records (the decoder
	 * caches names by their raw bytes) */
	__builtin_memset(out->cgroup_leaf, 0, sizeof(out->cgroup_leaf));
	__builtin_memset(out->cgroup_parent, 0, sizeof(out->cgroup_parent));
	kn = ct_cgroup_kn(t, &v1);
	if (!kn)
		return;
	if (v1)
		*flags |= CT_F_CGROUP_V1;
	out->cgroup_id = BPF_CORE_READ(kn, id);
	bpf_probe_read_kernel_str(out->cgroup_leaf, CT_CGROUP_NAME_LEN, BPF_CORE_READ(kn, name));
	parent = ct_kn_parent(kn);
	if (parent)
		bpf_probe_read_kernel_str(out->cgroup_parent, CT_CGROUP_NAME_LEN,
					  BPF_CORE_READ(parent, name));
}

/* Fills out; leaves the task's namespace ids and real parent for differs_from(). */
static __always_inline void read_task(struct task_struct *t, struct ct_task *out, __u16 *flags,
				      struct ns_ids *ids, struct task_struct **parentp)
{
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	const struct cred *cred = BPF_CORE_READ(t, real_cred);
	struct pid *tgid_pid = BPF_CORE_READ(leader, thread_pid);
	struct user_namespace *user_ns;

	out->pid = BPF_CORE_READ(t, tgid);
	out->tid = BPF_CORE_READ(t, pid);
	out->ppid = BPF_CORE_READ(parent, tgid);
	out->uid = BPF_CORE_READ(cred, uid.val);
	out->gid = BPF_CORE_READ(cred, gid.val);
	out->start_ns = BPF_CORE_READ(leader, start_time);
	out->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_time);
	read_ns_ids(t, cred, tgid_pid, ids);
	out->vpid = ids->vnr;  /* the tgid as seen in the process's own pid namespace */
	out->pid_level = ids->level;
	ct_pids_between(tgid_pid, ids->level, out->vpids_between);
	/* the ids the process sees of itself: the host's unless a user namespace
	 * below the host's maps them (the host's map is the identity) */
	user_ns = ids->user_ns;
	out->ns_uid = out->uid;
	out->ns_gid = out->gid;
	if (BPF_CORE_READ(user_ns, level) > 0) {
		out->ns_uid = ct_map_id_up(&user_ns->uid_map, out->uid);
		out->ns_gid = ct_map_id_up(&user_ns->gid_map, out->gid);
	}
	__builtin_memset(out->comm, 0, sizeof(out->comm));  /* as the cgroup names */
	BPF_CORE_READ_STR_INTO(&out->comm, t, comm);
	read_ns(ids, &out->ns, flags);
	read_cgroup(t, out, flags);
	*parentp = parent;
}

static __always_inline bool ns_equal(const struct ct_ns *a, const struct ct_ns *b)
{
	return a->mnt == b->mnt && a->uts == b->uts && a->ipc == b->ipc &&
	       a->pid == b->pid && a->pid_for_children == b->pid_for_children &&
	       a->net == b->net && a->cgroup == b->cgroup && a->user == b->user &&
	       a->time == b->time && a->time_for_children == b->time_for_children;
}

/*
 * Do the namespaces of the task with these ids and inodes differ from o's?
 * Tasks that share all three ids (nearly every fork) are answered from
 * them; only the others are compared inode by inode.
 */
static __always_inline bool differs_from(const struct ns_ids *ids, const struct ct_ns *ns,
					 struct task_struct *o)
{
	struct ns_ids oids = {};
	struct ct_ns ons = {};
	__u16 unused = 0;

	read_ns_ids(o, BPF_CORE_READ(o, real_cred), BPF_CORE_READ(o, thread_pid), &oids);
	if (oids.nsproxy == ids->nsproxy && oids.user_ns == ids->user_ns &&
	    oids.pid_ns == ids->pid_ns)
		return false;
	read_ns(&oids, &ons, &unused);
	return !ns_equal(ns, &ons);
}

/*
 * The filters that do not depend on namespaces.  Cheap, so they run before
 * anything else is read.
 */
static __always_inline bool task_wanted(struct task_struct *t)
{
	__u32 tgid = BPF_CORE_READ(t, tgid);

	if (cfg.ignore_tgid && tgid == cfg.ignore_tgid)
		return false;
	if (cfg.filter_pid && !bpf_map_lookup_elem(CT_MAP(tracked), &tgid))
		return false;
	if (cfg.filter_comm) {
		char comm[CT_COMM_LEN];

		BPF_CORE_READ_STR_INTO(&comm, t, comm);
		for (int i = 0; i < CT_COMM_LEN; i++) {
			if (comm[i] != cfg.comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

static __always_inline void fill_header(struct ct_header *h, __u16 type, __u16 size)
{
	h->type = type;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime_ns = bpf_ktime_get_ns();
}

/* ---- exec ---------------------------------------------------------------- */

/*
 * An exec record's path, once read into the start of its data (n: what the
 * string read returned; the read is the caller's, from kernel or user
 * memory).  A path that could not be read is an empty string; one that
 * filled the buffer may have been cut short; the bound on n is what lets
 * the verifier accept the argv copied after it.  Returns the path's length
 * with its NUL: where argv starts.
 */
static __always_inline long finish_filename(struct ct_exec_event *e, long n)
{
	if (n <= 0) {
		e->data[0] = 0;
		n = 1;
	}
	if (n >= CT_FILENAME_MAX)
		e->hdr.flags |= CT_F_FILENAME_TRUNCATED;
	if (n > CT_FILENAME_MAX)
		n = CT_FILENAME_MAX;
	e->filename_len = n;
	return n;
}

/*
 * An exec record (successful or failed) for task, its task part filled, in
 * the per-CPU heap; NULL when the filters drop it (counted) or without a heap.
 */
static __always_inline struct ct_exec_event *exec_record(struct task_struct *task)
{
	__u32 key = 0;
	struct ct_exec_event *e;
	struct task_struct *parent;
	struct ns_ids ids = {};

	if (!task_wanted(task)) {
		count(CT_CNT_FILTERED);
		return NULL;
	}
	e = bpf_map_lookup_elem(CT_MAP(exec_heap), &key);
	if (!e)
		return NULL;
	e->hdr.flags = 0;
	read_task(task, &e->task, &e->hdr.flags, &ids, &parent);
	if (differs_from(&ids, &e->task.ns, parent))
		e->hdr.flags |= CT_F_NS_CHANGE;
	else if (cfg.ns_changes_only) {
		count(CT_CNT_FILTERED);
		return NULL;
	}
	return e;
}

/* Sends the used part of an exec record: the fixed part, the path, the argv. */
static __always_inline void send_exec(struct ct_exec_event *e, __u16 type, long path_len,
				      __u64 args_len)
{
	__u64 size;

	e->args_len = args_len;
	size = offsetof(struct ct_exec_event, data) + path_len + args_len;
	if (size > sizeof(*e))
		size = sizeof(*e);
	fill_header(&e->hdr, type, size);
	if (bpf_ringbuf_output(CT_MAP(events), e, size, rb_flags()))
		count(CT_CNT_LOST);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	CT_ABLATE_ENTRY(CT_PROG_EXEC);
	struct ct_exec_event *e;
	struct mm_struct *mm;
	__u64 arg_start, arg_end, len;
	long n;

	e = exec_record(p);
	if (!e)
		return 0;
	e->old_pid = old_pid;
	e->ret = 0;

	n = bpf_probe_read_kernel_str(e->data, CT_FILENAME_MAX, BPF_CORE_READ(bprm, filename));
	n = finish_filename(e, n);

	/* argv as the new program sees it: the kernel just copied it to the new stack */
	mm = BPF_CORE_READ(p, mm);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > CT_ARGS_MAX) {
		len = CT_ARGS_MAX;
		e->hdr.flags |= CT_F_ARGS_TRUNCATED;
	}
	if (len && bpf_probe_read_user(e->data + n, len, (void *)arg_start))
		len = 0;
	send_exec(e, CT_EVENT_EXEC, n, len);
	return 0;
}

/*
 * One argv entry of a failed exec per call, through bpf_loop (5.17+): an
 * unrolled loop of string reads at growing offsets is more than the verifier
 * will walk.
 */
struct argv_ctx {
	struct ct_exec_event *e;
	const char *const *argv;
	__u32 base;  /* bytes of data[] used by the path */
	__u32 off;   /* bytes of argv copied so far */
};

CT_LOOP_STEP read_failed_arg(__u32 i, void *data)
{
	struct argv_ctx *a = data;
	const char *arg = NULL;
	__u32 base = a->base, off = a->off;
	long m;

	if (bpf_probe_read_user(&arg, sizeof(arg), &a->argv[i]) || !arg)
		return 1;
	if (off > CT_ARGS_MAX - CT_FAILED_ARG_MAX || base > CT_FILENAME_MAX) {
		a->e->hdr.flags |= CT_F_ARGS_TRUNCATED;
		return 1;
	}
	m = bpf_probe_read_user_str(a->e->data + base + off, CT_FAILED_ARG_MAX, arg);
	if (m <= 0)
		return 1;
	/* an entry that filled its room was cut short; said without a branch,
	 * whose two sides the verifier would follow through every later turn
	 * of an unrolled loop (bcc): ct_below(CT_FAILED_ARG_MAX - 1, m) */
	a->e->hdr.flags |= ct_below(CT_FAILED_ARG_MAX - 1, m) & CT_F_ARGS_TRUNCATED;
	a->off = off + m;
	return 0;
}

/*
 * A failed exec: the program never changed, so the registers the syscall
 * entered with still hold what it was asked to run (a successful one was
 * reported at sched_process_exec).
 */
static __always_inline int exec_failed(long ret, __u64 filename, __u64 argv)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct ct_exec_event *e;
	struct argv_ctx actx = {};
	long n;

	e = exec_record(task);
	if (!e)
		return 0;
	e->old_pid = tid;
	e->ret = ret;

	n = bpf_probe_read_user_str(e->data, CT_FILENAME_MAX, (void *)filename);
	n = finish_filename(e, n);

	actx.e = e;
	actx.argv = (const char *const *)argv;
	actx.base = n;
	CT_LOOP(CT_FAILED_ARGC_MAX, read_failed_arg, &actx);
	send_exec(e, CT_EVENT_EXEC_FAILED, n, actx.off);
	return 0;
}

/* The path and argv are the first two arguments of execve, the next two of execveat. */
static __always_inline int exec_returned(long ret, bool at)
{
	struct pt_regs *regs;

	if (ret >= 0)
		return 0;
	regs = ct_syscall_regs();
	if (at)
		return exec_failed(ret, PT_REGS_PARM2_CORE_SYSCALL(regs),
				   PT_REGS_PARM3_CORE_SYSCALL(regs));
	return exec_failed(ret, PT_REGS_PARM1_CORE_SYSCALL(regs), PT_REGS_PARM2_CORE_SYSCALL(regs));
}

SEC("tracepoint/syscalls/sys_exit_execve")
int handle_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_EXIT_EXECVE);
	return exec_returned(ctx->ret, false);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int handle_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_EXIT_EXECVEAT);
	return exec_returned(ctx->ret, true);
}

/* ---- fork ---------------------------------------------------------------- */

/* The flags of the clone or fork call that is creating a task, if it is one. */
static __always_inline bool clone_flags_of_caller(__u64 *flags)
{
	struct pt_regs *regs;

	switch (ct_current_syscall(&regs)) {
	case CT_NR_CLONE:
		*flags = PT_REGS_PARM1_CORE_SYSCALL(regs);
		return true;
	case CT_NR_CLONE3:  /* flags is the first field of its struct clone_args */
		return !bpf_probe_read_user(flags, sizeof(*flags),
					    (void *)PT_REGS_PARM1_CORE_SYSCALL(regs));
	case CT_NR_FORK:
		*flags = SIGCHLD;
		return true;
	case CT_NR_VFORK:
		*flags = CLONE_VFORK | CLONE_VM | SIGCHLD;
		return true;
	}
	return false;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	CT_ABLATE_ENTRY(CT_PROG_FORK);
	__u32 ptid = BPF_CORE_READ(parent, pid);
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	bool thread = BPF_CORE_READ(child, pid) != ctgid;
	struct ct_fork_event *e;
	struct task_struct *real_parent;
	struct ns_ids ids = {};
	__u64 clone_flags = 0;
	__u16 hflags = 0;
	__u8 one = 1;

	/* the fork runs in the caller's syscall: its flags are in its registers */
	if (clone_flags_of_caller(&clone_flags))
		hflags |= CT_F_CLONE_FLAGS_KNOWN;
	if (thread) {
		count(CT_CNT_THREADS);
		hflags |= CT_F_THREAD;
		if (!cfg.emit_threads)
			return 0;
	} else if (cfg.filter_pid && bpf_map_lookup_elem(CT_MAP(tracked), &ptgid)) {
		bpf_map_update_elem(CT_MAP(tracked), &ctgid, &one, BPF_ANY);
	}
	if (!task_wanted(child)) {
		count(CT_CNT_FILTERED);
		return 0;
	}
	e = bpf_ringbuf_reserve(CT_MAP(events), sizeof(*e), 0);
	if (!e) {
		count(CT_CNT_LOST);
		return 0;
	}
	e->hdr.flags = hflags;
	read_task(child, &e->task, &e->hdr.flags, &ids, &real_parent);
	if (clone_flags & (CT_CLONE_NEW_MASK | CLONE_NEWTIME)) {
		e->hdr.flags |= CT_F_NS_CHANGE;
	} else if (differs_from(&ids, &e->task.ns, parent)) {
		/* the caller's namespaces: the child starts in them unless told otherwise */
		e->hdr.flags |= CT_F_NS_CHANGE;
	}
	if (cfg.ns_changes_only && !(e->hdr.flags & CT_F_NS_CHANGE)) {
		bpf_ringbuf_discard(e, 0);
		count(CT_CNT_FILTERED);
		return 0;
	}
	e->parent_pid = ptgid;
	e->parent_tid = ptid;
	e->clone_flags = clone_flags;
	fill_header(&e->hdr, CT_EVENT_FORK, sizeof(*e));
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* ---- exit ---------------------------------------------------------------- */

SEC("raw_tp/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	CT_ABLATE_ENTRY(CT_PROG_EXIT);
	struct ct_exit_event *e;
	struct task_struct *parent;
	struct ns_ids ids = {};
	__u32 tgid, *handed, reaper;

	tgid = BPF_CORE_READ(p, tgid);
	if (!ct_group_dead(p)) {
		/* a thread: its children stay in the process unless no sibling is
		 * left alive; either way, by the process's end they are the reaper's */
		if (ct_has_children(p)) {
			reaper = ct_new_reaper(p);
			bpf_map_update_elem(CT_MAP(handed_on), &tgid, &reaper, BPF_ANY);
		}
		return 0;
	}
	handed = bpf_map_lookup_elem(CT_MAP(handed_on), &tgid);
	reaper = handed ? *handed : 0;
	if (handed)
		bpf_map_delete_elem(CT_MAP(handed_on), &tgid);
	if (!task_wanted(p)) {
		count(CT_CNT_FILTERED);
		return 0;
	}
	if (cfg.filter_pid)
		bpf_map_delete_elem(CT_MAP(tracked), &tgid);
	e = bpf_ringbuf_reserve(CT_MAP(events), sizeof(*e), 0);
	if (!e) {
		count(CT_CNT_LOST);
		return 0;
	}
	e->hdr.flags = 0;
	read_task(p, &e->task, &e->hdr.flags, &ids, &parent);
	if (differs_from(&ids, &e->task.ns, parent)) {
		e->hdr.flags |= CT_F_NS_CHANGE;
	} else if (cfg.ns_changes_only) {
		bpf_ringbuf_discard(e, 0);
		count(CT_CNT_FILTERED);
		return 0;
	}
	e->status = BPF_CORE_READ(p, exit_code);  /* task_struct calls the wait status exit_code */
	e->reaper = 0;
	/* children still linked: they are reparented right after this tracepoint */
	if (ct_group_has_children(p)) {
		e->hdr.flags |= CT_F_HAD_CHILDREN;
		e->reaper = ct_new_reaper(p);
	} else if (handed) {  /* an earlier thread's exit handed them on */
		e->hdr.flags |= CT_F_HAD_CHILDREN;
		e->reaper = reaper;
	}
	fill_header(&e->hdr, CT_EVENT_EXIT, sizeof(*e));
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* ---- setns / unshare ------------------------------------------------------ */

static __always_inline int ns_enter(__u64 arg0, __u64 arg1)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ns_call c = { .arg0 = arg0, .arg1 = arg1 };
	struct ns_ids ids = {};
	__u16 unused = 0;

	/* the call's one event is dropped here: its exit finds no entry */
	if (!task_wanted(task)) {
		count(CT_CNT_FILTERED);
		return 0;
	}
	read_ns_ids(task, BPF_CORE_READ(task, real_cred), BPF_CORE_READ(task, thread_pid), &ids);
	read_ns(&ids, &c.before, &unused);
	bpf_map_update_elem(CT_MAP(ns_calls), &tid, &c, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_setns")
int handle_enter_setns(struct trace_event_raw_sys_enter *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_ENTER_SETNS);
	return ns_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_unshare")
int handle_enter_unshare(struct trace_event_raw_sys_enter *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_ENTER_UNSHARE);
	return ns_enter(ctx->args[0], 0);
}

/* The part of a setns or unshare record the two share. */
static __always_inline void fill_ns_change(struct ct_header *hdr, struct ct_task *task,
					   struct ct_ns *before, const struct ns_call *c, long ret)
{
	struct task_struct *parent;
	struct ns_ids ids;

	hdr->flags = ret == 0 ? CT_F_NS_CHANGE : 0;
	read_task(bpf_get_current_task_btf(), task, &hdr->flags, &ids, &parent);
	*before = c->before;
}

/*
 * setns or unshare returned: the namespaces after the call, beside those
 * its entry saw.  One body for both; each program passes a constant, so
 * the other branch is compiled out.
 */
static __always_inline int ns_exit(long ret, bool setns)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ns_call *c = bpf_map_lookup_elem(CT_MAP(ns_calls), &tid);

	if (!c)
		return 0;
	if (cfg.ns_changes_only && ret != 0) {
		count(CT_CNT_FILTERED);
	} else if (setns) {
		struct ct_setns_event *e = bpf_ringbuf_reserve(CT_MAP(events), sizeof(*e), 0);

		if (e) {
			fill_ns_change(&e->hdr, &e->task, &e->ns_before, c, ret);
			e->fd = c->arg0;
			e->nstype = c->arg1;
			e->ret = ret;
			fill_header(&e->hdr, CT_EVENT_SETNS, sizeof(*e));
			bpf_ringbuf_submit(e, rb_flags());
		} else {
			count(CT_CNT_LOST);
		}
	} else {
		struct ct_unshare_event *e = bpf_ringbuf_reserve(CT_MAP(events), sizeof(*e), 0);

		if (e) {
			fill_ns_change(&e->hdr, &e->task, &e->ns_before, c, ret);
			e->__pad = 0;
			e->flags = c->arg0;
			e->ret = ret;
			fill_header(&e->hdr, CT_EVENT_UNSHARE, sizeof(*e));
			bpf_ringbuf_submit(e, rb_flags());
		} else {
			count(CT_CNT_LOST);
		}
	}
	bpf_map_delete_elem(CT_MAP(ns_calls), &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_setns")
int handle_exit_setns(struct trace_event_raw_sys_exit *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_EXIT_SETNS);
	return ns_exit(ctx->ret, true);
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int handle_exit_unshare(struct trace_event_raw_sys_exit *ctx)
{
	CT_ABLATE_ENTRY(CT_PROG_EXIT_UNSHARE);
	return ns_exit(ctx->ret, false);
}
