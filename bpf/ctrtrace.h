/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The contract between the BPF programs and the Python decoder.
 *
 * Every record in the ring buffer starts with struct ct_header.  Type numbers
 * are fixed forever: recordings and the decoder depend on them.  The Python
 * mirror lives in tracer/layout.py; tests/test_layout.py compares it with the
 * BTF of the built object, so the two sides cannot drift apart silently.
 *
 * Only fixed-width types are used here so that the layout is the same for
 * the BPF target and for the host.
 */
#ifndef CTRTRACE_H
#define CTRTRACE_H

#define CT_COMM_LEN        16
#define CT_FILENAME_MAX    256   /* bytes of the exec'd path, NUL included */
#define CT_ARGS_MAX        2048  /* bytes of argv copied per exec (NUL-separated) */
#define CT_FAILED_ARGC_MAX 24    /* argv entries read for a failed exec */
#define CT_FAILED_ARG_MAX  128   /* bytes per argv entry of a failed exec */
#define CT_CGROUP_NAME_LEN 80    /* "docker-<64 hex>.scope" and its NUL fit */
#define CT_PID_LEVELS_BETWEEN 7  /* pid levels kept between the host's and the task's own */
#define CT_ID_UNMAPPED 0xffffffffU /* an id its user namespace does not map ((uid_t)-1) */

enum ct_event_type {
	CT_EVENT_EXEC        = 1,  /* sched_process_exec: the exec succeeded */
	CT_EVENT_FORK        = 2,  /* sched_process_fork: a new process (or thread) */
	CT_EVENT_EXIT        = 3,  /* sched_process_exit of the last thread */
	CT_EVENT_SETNS       = 4,  /* setns(2) returned */
	CT_EVENT_UNSHARE     = 5,  /* unshare(2) returned */
	CT_EVENT_EXEC_FAILED = 6,  /* execve/execveat returned an error */
};

/* Per-CPU counters, read by userspace at the end of a run. */
enum ct_counter {
	CT_CNT_LOST      = 0,  /* ring buffer full: event dropped */
	CT_CNT_THREADS   = 1,  /* CLONE_THREAD children seen */
	CT_CNT_FILTERED  = 2,  /* events dropped by a filter, in the kernel */
	CT_CNT_MAX       = 3,
};

/* Flags in ct_header.flags */
#define CT_F_ARGS_TRUNCATED      0x01  /* exec: argv longer than CT_ARGS_MAX */
#define CT_F_FILENAME_TRUNCATED  0x02  /* exec: path longer than CT_FILENAME_MAX */
#define CT_F_CLONE_FLAGS_KNOWN   0x04  /* fork: created by a clone/fork syscall we saw */
#define CT_F_THREAD              0x08  /* fork: the child is a thread (CLONE_THREAD) */
#define CT_F_NO_NSPROXY          0x10  /* the task had no nsproxy (exiting or kernel) */
#define CT_F_CGROUP_V1           0x20  /* cgroup names are from a v1 hierarchy (no v2 placement) */
#define CT_F_HAD_CHILDREN        0x40  /* exit: the process had children; reaper says who adopts them */
#define CT_F_NS_CHANGE           0x80  /* a namespace was created or entered (fork with CLONE_NEW*,
                                        * setns/unshare that succeeded), or the process's namespaces
                                        * differ from its parent's: what --ns-changes keeps */

struct ct_header {
	__u16 type;      /* enum ct_event_type */
	__u16 size;      /* bytes of this record, header included */
	__u16 flags;     /* CT_F_* */
	__u16 cpu;
	__u64 ktime_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};

/* Namespace inode numbers, as /proc/PID/ns/<name> shows them. */
struct ct_ns {
	__u32 mnt;
	__u32 uts;
	__u32 ipc;
	__u32 pid;                /* the task's own: ns_of_pid(task_pid(t)) */
	__u32 pid_for_children;   /* nsproxy->pid_ns_for_children */
	__u32 net;
	__u32 cgroup;
	__u32 user;               /* real_cred->user_ns */
	__u32 time;               /* nsproxy->time_ns */
	__u32 time_for_children;  /* nsproxy->time_ns_for_children */
};

/* The process an event is about, read from its task_struct at the event. */
struct ct_task {
	__u32 pid;             /* tgid */
	__u32 tid;
	__u32 ppid;            /* real_parent's tgid */
	__u32 vpid;            /* tgid in the task's own pid namespace */
	__u32 uid;
	__u32 gid;
	__u64 start_ns;        /* group leader's start_time: (pid, start_ns) is the identity */
	__u64 parent_start_ns; /* same for the real parent */
	__u64 cgroup_id;       /* kernfs id of the task's cgroup (v2, else a v1 hierarchy) */
	char comm[CT_COMM_LEN];
	struct ct_ns ns;
	/* the cgroup's directory name and its parent's: "docker"/"<id>",
	 * "system.slice"/"docker-<id>.scope"; container attribution starts here */
	char cgroup_parent[CT_CGROUP_NAME_LEN];
	char cgroup_leaf[CT_CGROUP_NAME_LEN];
	/* uid and gid as the task's own user namespace maps them (its uid_map
	 * and gid_map): what the process sees of itself; uid, gid are the host's */
	__u32 ns_uid;
	__u32 ns_gid;
	/* the task's pid at every level: pid at level 0 (the host's), vpid at
	 * pid_level (its own namespace's), these in between (levels 1, 2, ...;
	 * 0 past pid_level - 1, and past CT_PID_LEVELS_BETWEEN levels) */
	__u32 pid_level;
	__u32 vpids_between[CT_PID_LEVELS_BETWEEN];
};

struct ct_exec_event {
	struct ct_header hdr;
	struct ct_task task;
	__u32 old_pid;        /* tid that called exec (differs for a non-leader thread) */
	__s32 ret;            /* 0, or -errno for CT_EVENT_EXEC_FAILED */
	__u16 filename_len;   /* bytes of data[] holding the path, NUL included */
	__u16 args_len;       /* bytes of data[] after the path holding argv */
	__u32 __pad;
	char data[CT_FILENAME_MAX + CT_ARGS_MAX];  /* only the used bytes are sent */
};

struct ct_fork_event {
	struct ct_header hdr;
	struct ct_task task;  /* the child */
	__u32 parent_pid;     /* tgid of the caller of clone/fork (real_parent may differ: CLONE_PARENT) */
	__u32 parent_tid;
	__u64 clone_flags;    /* valid if CT_F_CLONE_FLAGS_KNOWN */
};

struct ct_exit_event {
	struct ct_header hdr;
	struct ct_task task;
	__u32 status;         /* the wait(2) status word: (code << 8) | signal, 0x80 = core */
	__u32 reaper;         /* CT_F_HAD_CHILDREN: tgid that adopts the children (0: unknown) */
};

struct ct_setns_event {
	struct ct_header hdr;
	struct ct_task task;      /* namespaces after the call */
	struct ct_ns ns_before;
	__s32 fd;
	__s32 nstype;
	__s64 ret;
};

struct ct_unshare_event {
	struct ct_header hdr;
	struct ct_task task;      /* namespaces after the call */
	struct ct_ns ns_before;
	__u32 __pad;
	__u64 flags;
	__s64 ret;
};

/* Tunables: one read-only struct, set by userspace after open and before load. */
struct ct_config {
	__u32 ignore_tgid;        /* the tracer itself */
	__u8  filter_pid;         /* only tgids in the "tracked" map (a pid and its descendants) */
	__u8  filter_comm;        /* only tasks whose comm equals comm[] */
	__u8  ns_changes_only;    /* only events that create, enter or differ in namespaces */
	__u8  emit_threads;       /* also emit fork events for CLONE_THREAD children */
	char  comm[CT_COMM_LEN];
	/* Wake the reader whatever it is doing when this much comes to be
	 * waiting; below it, only the first record after a drain wakes it
	 * (rb_flags). */
	__u64 wakeup_bytes;
};

#endif /* CTRTRACE_H */
