// SPDX-License-Identifier: GPL-2.0
/* The floor of a per-call syscall-tracepoint tool (tyrd before 2026-11-26): empty programs on
 * syscalls/sys_enter_openat and sys_exit_openat. bench/kernel/run.sh measures the open loop
 * with them attached (configuration `floor-percall`), next to floor.bpf.c. */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/syscalls/sys_enter_openat")
int floor_enter(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int floor_exit(void *ctx)
{
	return 0;
}
