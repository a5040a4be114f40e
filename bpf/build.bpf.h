/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The two builds of the programs, and what each gives them.  The programs
 * are written once, with libbpf's vocabulary; this header makes that
 * vocabulary mean the same under both:
 *
 * - CO-RE (the default, bpf/Makefile): clang against vmlinux.h, libbpf's
 *   headers; field reads are relocated by libbpf at load.
 * - bcc (-DCT_BCC, tracer/kernel/bcc.py): bcc's compiler and prelude, with
 *   the kernel's structs declared as the running kernel lays them out
 *   (ct_kernel.h, made from its BTF by tracer/kernel/kstructs.py, or, with
 *   CT_KERNEL_HEADERS, the kernel's own headers: headers.bpf.h).  Reads are plain
 *   bpf_probe_read_kernel at those offsets; bcc has no relocations.  The
 *   maps are created by ctrtrace before the compile and named here by file
 *   descriptor (CT_FD_<map>, placeholders that the loader replaces); the
 *   tunables are a frozen read-only map, as libbpf makes .rodata, so the
 *   verifier prunes by their values under both builds; a loop is a bounded
 *   loop, as bcc refuses bpf_loop's callbacks.
 *
 * What differs by kernel version is in compat.bpf.h, by architecture in
 * arch.bpf.h.
 */
#ifndef CTRTRACE_BUILD_BPF_H
#define CTRTRACE_BUILD_BPF_H

#ifndef CT_BCC

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* a map, as a helper takes it */
#define CT_MAP(name) (&name)
/* the tunables, in .rodata */
#define CT_CONFIG const volatile struct ct_config cfg = {};
/* n calls of step(i, ctx) until one returns nonzero: the verifier checks a
 * callback once, where it would walk every turn of an open loop */
#define CT_LOOP(n, step, ctx) bpf_loop((n), (step), (ctx), 0)
#define CT_LOOP_STEP static long
/* how a struct's size is known: by relocation */
#define CT_TYPE_SIZE(type) bpf_core_type_size(type)

#else /* CT_BCC */

#ifdef CT_KERNEL_HEADERS
#include "headers.bpf.h"
#else
#include "ct_kernel.h"
#endif

#define SEC(name)
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif

#ifdef CT_NO_KERNEL_BTF
/* a kernel without BTF has no typed task pointers: the task is a plain
 * address, its registers found as the kernel finds them (arch.bpf.h) */
#define bpf_get_current_task_btf() ((struct task_struct *)bpf_get_current_task())
#define bpf_task_pt_regs(task) ct_task_pt_regs(task)
#endif

/* A map by the descriptor ctrtrace created it with: BPF_PSEUDO_MAP_FD (1),
 * or BPF_PSEUDO_MAP_VALUE (2) for the address of an array's first value. */
#define CT_MAP(name) ((void *)bpf_pseudo_fd(1, CT_FD_##name))
#define CT_CONFIG
#define cfg (*(const volatile struct ct_config *)bpf_pseudo_fd(2, CT_FD_config))
#define CT_LOOP(n, step, ctx) \
	({ for (__u32 __i = 0; __i < (n); __i++) if (step(__i, (ctx))) break; 0; })
#define CT_LOOP_STEP static __always_inline long
#define CT_TYPE_SIZE(type) sizeof(type)
/* a field the code reads is declared in ct_kernel.h; the ones a kernel may
 * lack are left out of the build by CT_HAS_ in compat.bpf.h */
#define bpf_core_field_exists(field) 1

/*
 * libbpf's field reads, as plain reads at the declared layout.  A value
 * that cannot be read is 0, as with BPF_CORE_READ.
 */
#define ct_read(lvalue) ({ \
	union { typeof(lvalue) v; char raw[sizeof(lvalue)]; } __r; \
	__builtin_memset(__r.raw, 0, sizeof(__r.raw)); \
	bpf_probe_read_kernel(__r.raw, sizeof(__r.raw), &(lvalue)); \
	__r.v; })
#define ___ct_read1(s, a) ct_read((s)->a)
#define ___ct_read2(s, a, b) ct_read(ct_read((s)->a)->b)
#define ___ct_read3(s, a, b, c) ct_read(ct_read(ct_read((s)->a)->b)->c)
#define ___ct_nth(_1, _2, _3, N, ...) N
#define BPF_CORE_READ(s, ...) \
	___ct_nth(__VA_ARGS__, ___ct_read3, ___ct_read2, ___ct_read1)(s, __VA_ARGS__)
#define BPF_CORE_READ_STR_INTO(dst, s, a) \
	bpf_probe_read_kernel_str((dst), sizeof(*(dst)), &(s)->a)
#define bpf_core_read(dst, sz, src) bpf_probe_read_kernel((dst), (sz), (src))
/* a bitfield: CT_BITFIELD_<field> is "bit offset, bits" in its struct */
#define BPF_CORE_READ_BITFIELD_PROBED(s, field) ct_read_bits((s), CT_BITFIELD_##field)

static __always_inline __u64 ct_read_bits(const void *s, __u32 bit_offset, __u32 bits)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const char *)s + bit_offset / 8);
	return (v >> (bit_offset % 8)) & ((1ULL << bits) - 1);
}

/*
 * A program on a raw tracepoint: libbpf's BPF_PROG, which names and types
 * its arguments, for up to three.  As there, each argument goes from the
 * context's u64 to its parameter's type by implicit conversion.
 */
#define ___ct_ctx1() ctx[0]
#define ___ct_ctx2() ctx[0], ctx[1]
#define ___ct_ctx3() ctx[0], ctx[1], ctx[2]
#define ___ct_ctx(...) ___ct_nth(__VA_ARGS__, ___ct_ctx3, ___ct_ctx2, ___ct_ctx1)()
#define BPF_PROG(name, ...) \
	name(unsigned long long *ctx); \
	static __always_inline int ____##name(unsigned long long *ctx, __VA_ARGS__); \
	_Pragma("GCC diagnostic push") \
	_Pragma("GCC diagnostic ignored \"-Wint-conversion\"") \
	int name(unsigned long long *ctx) \
	{ \
		return ____##name(ctx, ___ct_ctx(__VA_ARGS__)); \
	} \
	_Pragma("GCC diagnostic pop") \
	static __always_inline int ____##name(unsigned long long *ctx, __VA_ARGS__)

/* A syscall tracepoint's record, as its format file in tracefs lays it out
 * (the common fields, then the syscall number, then its arguments or
 * return value): an ABI, the same for every kernel. */
struct trace_event_raw_sys_enter {
	__u64 __common;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	__u64 __common;
	long id;
	long ret;
};

#endif /* CT_BCC */

#endif /* CTRTRACE_BUILD_BPF_H */
