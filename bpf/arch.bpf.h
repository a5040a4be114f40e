/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What differs from one architecture to the next: the syscall numbers, and
 * the registers a syscall's number and arguments are in.  The arguments'
 * registers are libbpf's PT_REGS_PARMn_CORE_SYSCALL (bpf_tracing.h, chosen
 * by the -D__TARGET_ARCH_ that bpf/Makefile passes); the rest is here.
 */
#ifndef CTRTRACE_ARCH_BPF_H
#define CTRTRACE_ARCH_BPF_H

#include "build.bpf.h"

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
#ifdef CT_BCC  /* libbpf's names for a syscall's argument registers */
/* task_pt_regs(), arch/x86/include/asm/processor.h: the top of the task's stack */
#define ct_task_pt_regs(t) \
	((long)((struct pt_regs *)((unsigned long)BPF_CORE_READ(t, stack) + THREAD_SIZE - \
				   TOP_OF_KERNEL_STACK_PADDING) - 1))
#define PT_REGS_PARM1_CORE_SYSCALL(regs) BPF_CORE_READ(regs, di)
#define PT_REGS_PARM2_CORE_SYSCALL(regs) BPF_CORE_READ(regs, si)
#define PT_REGS_PARM3_CORE_SYSCALL(regs) BPF_CORE_READ(regs, dx)
#endif
#elif defined(__TARGET_ARCH_arm64)
#define CT_NR_CLONE   220
#define CT_NR_FORK    (-2)
#define CT_NR_VFORK   (-3)
#define CT_NR_CLONE3  435
#define CT_TIF_32BIT  22          /* arch/arm64/include/asm/thread_info.h */
#define ct_compat_task(t) (BPF_CORE_READ(t, thread_info.flags) & (1UL << CT_TIF_32BIT))
#define ct_regs_nr(regs)  ((long)BPF_CORE_READ(regs, syscallno))
#ifdef CT_BCC
/* task_pt_regs(), arch/arm64/include/asm/processor.h */
#define ct_task_pt_regs(t) \
	((long)((struct pt_regs *)((unsigned long)BPF_CORE_READ(t, stack) + THREAD_SIZE) - 1))
#define PT_REGS_PARM1_CORE_SYSCALL(regs) BPF_CORE_READ(regs, orig_x0)
#define PT_REGS_PARM2_CORE_SYSCALL(regs) BPF_CORE_READ(regs, regs[1])
#define PT_REGS_PARM3_CORE_SYSCALL(regs) BPF_CORE_READ(regs, regs[2])
#endif
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

#endif /* CTRTRACE_ARCH_BPF_H */
