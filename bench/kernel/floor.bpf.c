// SPDX-License-Identifier: GPL-2.0
/* The floor of tyrd's syscall hooks: near-empty programs (one comparison each) on the raw
 * syscall tracepoints tyrd uses (tp_btf/sys_enter, tp_btf/sys_exit: every syscall).
 * bench/kernel/run.sh measures the open loop with them attached
 * (configuration `floor`), so tyrd's overhead can be read against what the kernel charges
 * for the hooks alone. */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_enter")
int floor_enter(unsigned long long *ctx)
{
	return ctx[1] == 257;
}

SEC("tp_btf/sys_exit")
int floor_exit(unsigned long long *ctx)
{
	return ctx[1] == 257;
}
