// SPDX-License-Identifier: GPL-2.0
/* The smallest LSM program: loading it tells whether this kernel accepts BPF LSM programs
 * (BPF trampolines). It is never attached by the probe. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("lsm/file_open")
int BPF_PROG(tyr_probe_file_open, struct file *file)
{
	return 0;
}
