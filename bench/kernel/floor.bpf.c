// SPDX-License-Identifier: GPL-2.0
/* The floor of any syscall-tracepoint tool: empty programs on the hooks tyrd's open path uses
 * (sys_enter_openat, sys_exit_openat). bench/kernel/run.sh measures the open loop with them
 * attached (configuration `floor`), so tyrd's overhead can be read against what the kernel
 * charges for the hooks alone. */
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
