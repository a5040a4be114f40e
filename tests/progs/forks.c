/*
 * Creates a child by each syscall that can, with flags the test knows, and
 * fails an execve and an execveat: one JSON line per call, for the test to
 * compare with the events.  Children exit at once.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *call, long pid, unsigned long long flags)
{
	printf("{\"call\":\"%s\",\"pid\":%ld,\"flags\":%llu}\n", call, pid, flags);
	fflush(stdout);
}

static void reap(long pid)
{
	int status;

	if (pid > 0)
		waitpid(pid, &status, 0);
}

int main(void)
{
	char *argv[] = {"/nonexistent/forks-exec", "one", "two", NULL};
	char *envp[] = {NULL};
	struct clone_args ca;
	long pid;

	pid = syscall(SYS_fork);
	if (pid == 0)
		_exit(0);
	report("fork", pid, SIGCHLD);
	reap(pid);

	pid = vfork();  /* glibc's vfork is the vfork syscall */
	if (pid == 0)
		_exit(0);
	report("vfork", pid, CLONE_VFORK | CLONE_VM | SIGCHLD);
	reap(pid);

	pid = syscall(SYS_clone, CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	report("clone", pid, CLONE_NEWUTS | SIGCHLD);
	reap(pid);

	memset(&ca, 0, sizeof(ca));
	ca.flags = CLONE_NEWIPC;
	ca.exit_signal = SIGCHLD;
	pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid == 0)
		_exit(0);
	report("clone3", pid, CLONE_NEWIPC);
	reap(pid);

	syscall(SYS_execve, argv[0], argv, envp);
	syscall(SYS_execveat, AT_FDCWD, argv[0], argv, envp, 0);
	return 0;
}
