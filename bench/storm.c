// An exec storm: WORKERS processes each fork (or vfork) and exec PATH as fast
// as they can, N times in all, waiting for each child. Prints one JSON line:
// {"execs": N, "workers": W, "seconds": S, "rate": N/S, "cpu_s": C}, C being
// the CPU time (user + system) of every process the storm made: what a
// tracer's in-kernel work adds to the workload shows there, its own process not.
//
//   cc -O2 -o storm storm.c
//   ./storm [--vfork] N WORKERS PATH [ARGS...]
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run_one(int use_vfork, char **argv)
{
	pid_t pid = use_vfork ? vfork() : fork();
	int status;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	int use_vfork = 0, i = 1;
	long n, workers, w, failures = 0;
	double t0, t1;
	struct rusage ru;

	if (argc > 1 && strcmp(argv[1], "--vfork") == 0) {
		use_vfork = 1;
		i++;
	}
	if (argc - i < 3) {
		fprintf(stderr, "usage: %s [--vfork] N WORKERS PATH [ARGS...]\n", argv[0]);
		return 2;
	}
	n = atol(argv[i]);
	workers = atol(argv[i + 1]);
	if (n <= 0 || workers <= 0) {
		fprintf(stderr, "N and WORKERS must be positive\n");
		return 2;
	}
	char **child = &argv[i + 2];

	t0 = now();
	for (w = 0; w < workers; w++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			long mine = n / workers + (w < n % workers ? 1 : 0), bad = 0;

			for (long k = 0; k < mine; k++)
				if (run_one(use_vfork, child))
					bad++;
			_exit(bad ? 1 : 0);
		}
	}
	for (w = 0; w < workers; w++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			failures++;
	}
	t1 = now();
	/* the workers, and through them their children: all waited for */
	getrusage(RUSAGE_CHILDREN, &ru);
	printf("{\"execs\": %ld, \"workers\": %ld, \"seconds\": %.6f, \"rate\": %.1f, "
	       "\"cpu_s\": %.6f, \"failed_workers\": %ld}\n",
	       n, workers, t1 - t0, n / (t1 - t0),
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, failures);
	return failures ? 1 : 0;
}
