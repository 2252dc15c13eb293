// SPDX-License-Identifier: GPL-2.0
// VM harness self-test: a BPF LSM program that denies opening the files listed in a map.
// CO-RE: compiled against crates/tyrd/bpf/vmlinux.h, relocated against the guest's BTF.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define EPERM 1

// A file identity: the kernel's dev_t of the filesystem (MKDEV layout) and the inode number.
struct file_key {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct file_key);
	__type(value, __u8);
} denied_files SEC(".maps");

SEC("lsm/file_open")
int BPF_PROG(deny_open, struct file *file, int ret)
{
	struct file_key key = {};

	if (ret != 0)
		return ret;
	key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (bpf_map_lookup_elem(&denied_files, &key))
		return -EPERM;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
