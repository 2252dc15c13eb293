/* Syscall loops for bench/kernel/run.sh. Prints "<mode> <iterations> <wall ns> <cpu ns>" per
 * iteration; cpu = user + system time of this process and its reaped children (BPF programs
 * run in the caller's system time), which a busy machine disturbs much less than wall time.
 *
 *   loop open PATH N     open(PATH, O_RDONLY) + close, N times
 *   loop getppid N       the getppid syscall (one no hook decides: what every other syscall
 *                        pays), N times
 *   loop exec N          fork + execve("/bin/true") + waitpid, N times
 *   loop connect N       TCP connect to a listener on 127.0.0.1 (a thread of this process)
 *                        + close with SO_LINGER 0 (no TIME_WAIT), N times
 *   loop churn N         fork + _exit(0) + waitpid, N times
 *   loop spawn N         forks N children that sleep; prints "ready" and waits for a line
 *                        (or EOF) on stdin, then kills and reaps them
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double cpu_ns(void)
{
	struct rusage self, children;
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &children);
	double us = 0;
	struct rusage *r[] = {&self, &children};
	for (int i = 0; i < 2; i++)
		us += r[i]->ru_utime.tv_sec * 1e6 + r[i]->ru_utime.tv_usec +
		      r[i]->ru_stime.tv_sec * 1e6 + r[i]->ru_stime.tv_usec;
	return us * 1e3;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double c0;

static void report(const char *mode, long n, double t0)
{
	printf("%s %ld %.1f %.1f\n", mode, n, (now_ns() - t0) / n, (cpu_ns() - c0) / n);
}

/* Start of a measurement: the wall clock, and the CPU clock in c0. */
static double start(void)
{
	c0 = cpu_ns();
	return now_ns();
}

static void loop_getppid(long n)
{
	double t0 = start();
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	report("getppid", n, t0);
}

static void loop_open(const char *path, long n)
{
	double t0 = start();
	for (long i = 0; i < n; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die(path);
		close(fd);
	}
	report("open", n, t0);
}

static void loop_exec(long n)
{
	char *argv[] = {"/bin/true", NULL};
	char *envp[] = {NULL};
	double t0 = start();
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			execve(argv[0], argv, envp);
			_exit(127);
		}
		int status;
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			die("exec child");
	}
	report("exec", n, t0);
}

static void *acceptor(void *arg)
{
	int lfd = *(int *)arg;
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c >= 0)
			close(c);
	}
	return NULL;
}

static void loop_connect(long n)
{
	static int lfd;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 4096) ||
	    getsockname(lfd, (struct sockaddr *)&addr, &len))
		die("listener");
	pthread_t t;
	if (pthread_create(&t, NULL, acceptor, &lfd))
		die("pthread_create");
	struct linger lin = {.l_onoff = 1, .l_linger = 0};
	double t0 = start();
	for (long i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
			die("connect");
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
		close(fd);
	}
	report("connect", n, t0);
}

static void loop_churn(long n)
{
	double t0 = start();
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, NULL, 0) < 0)
			die("waitpid");
	}
	report("churn", n, t0);
}

static void loop_spawn(long n)
{
	pid_t *pids = calloc(n, sizeof(pid_t));
	if (!pids)
		die("calloc");
	for (long i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork");
		if (pids[i] == 0) {
			for (;;)
				pause();
		}
	}
	printf("ready %ld\n", n);
	fflush(stdout);
	char line[16];
	if (!fgets(line, sizeof(line), stdin) && ferror(stdin))
		perror("stdin");
	for (long i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (long i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	free(pids);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "open"))
		loop_open(argv[2], atol(argv[3]));
	else if (argc == 3 && !strcmp(argv[1], "getppid"))
		loop_getppid(atol(argv[2]));
	else if (argc == 3 && !strcmp(argv[1], "exec"))
		loop_exec(atol(argv[2]));
	else if (argc == 3 && !strcmp(argv[1], "connect"))
		loop_connect(atol(argv[2]));
	else if (argc == 3 && !strcmp(argv[1], "churn"))
		loop_churn(atol(argv[2]));
	else if (argc == 3 && !strcmp(argv[1], "spawn"))
		loop_spawn(atol(argv[2]));
	else {
		fprintf(stderr, "usage: loop open PATH N | getppid N | exec N | connect N | churn N | spawn N\n");
		return 2;
	}
	return 0;
}
