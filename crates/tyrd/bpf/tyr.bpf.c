// SPDX-License-Identifier: GPL-2.0
/* Tracepoint tier: process identity (fork/exec/exit), file and exec enforcement by SIGKILL.
 *
 * Decisions walk the compiled policy tables exactly as tyr_policy::compile::emulate does:
 * base layer plus the overlays of the process's agent type, per table a byte-class DFA over
 * the canonical path, then the candidate rules in order (first match), strictest layer wins.
 * Anything the walk cannot complete (path too long or deep, inconsistent tables) is denied. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tyr_maps.h"

char LICENSE[] SEC("license") = "GPL";

#define SIGKILL 9
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define NO_RULE 0xffffffffu
#define PATH_MASK (TYR_PATH_MAX - 1)
#define SCRATCH_MASK (TYR_SCRATCH_SIZE - 1)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TYR_PROCS_MAX);
	__type(key, __u32);
	__type(value, struct tyr_proc);
} tyr_procs SEC(".maps");

/* cgroup v2 id → agent-type id (`tyr run`). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TYR_CGROUPS_MAX);
	__type(key, __u64);
	__type(value, __u32);
} tyr_cgroups SEC(".maps");

/* Agent executable path → agent-type id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TYR_EXES_MAX);
	__type(key, struct tyr_exe_key);
	__type(value, __u32);
} tyr_exes SEC(".maps");

/* Interpreter and loader executable path → 1: a governed process running one of them has
 * its read opens decided as exec too (TYR_PROC_INTERP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TYR_INTERPS_MAX);
	__type(key, struct tyr_exe_key);
	__type(value, __u32);
} tyr_interps SEC(".maps");

/* Children of governed processes that could not be recorded (process map full): killed at
 * their first governed operation. LRU so that recording one never fails. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TYR_DOOMED_MAX);
	__type(key, __u32);
	__type(value, __u32);
} tyr_doomed SEC(".maps");

/* Thread groups killed by a deny at syscall entry (reported there): the exit decision of the
 * same open does not report the deny again. Removed when the group exits. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TYR_DOOMED_MAX);
	__type(key, __u32);
	__type(value, __u32);
} tyr_entry_killed SEC(".maps");

/* Entry 0: number of doomed processes not yet exited (0 = skip the doomed lookup; entries
 * the LRU evicts are never subtracted, which only costs lookups). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tyr_alarm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_SLOTS);
	__type(key, __u32);
	__type(value, struct tyr_config);
} tyr_config SEC(".maps");

/* Decisions of file opens (see tyr_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TYR_VCACHE_MAX);
	__type(key, struct tyr_vkey);
	__type(value, struct tyr_vval);
} tyr_vcache SEC(".maps");

/* Entry 0: the namespace generation, bumped at entry and exit of every rename and mount
 * change (any process). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tyr_nsgen SEC(".maps");

/* Never read by the programs: updating its slot makes the kernel wait for an RCU grace
 * period (every running program finishes), which tyrd uses after flipping tyr_active so that
 * no program still reads the old slot when it is refilled. */
struct tyr_barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct tyr_barrier_inner);
} tyr_barrier SEC(".maps");

/* Entry 0: the table slot in use (see tyr_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tyr_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_AGENT_LAYERS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tyr_agent_layers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_TABLES_MAX);
	__type(key, __u32);
	__type(value, struct tyr_table);
} tyr_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_CLASSES_MAX);
	__type(key, __u32);
	__type(value, __u16);
} tyr_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_NEXT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} tyr_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_ACCEPT_MAX);
	__type(key, __u32);
	__type(value, struct tyr_accept);
} tyr_accept SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_BIN_MASKS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tyr_bin_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_CANDS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} tyr_cands SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_RULES_MAX);
	__type(key, __u32);
	__type(value, struct tyr_rule);
} tyr_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TYR_PORTS_MAX);
	__type(key, __u32);
	__type(value, struct tyr_port_range);
} tyr_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TYR_LPM_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tyr_lpm_key);
	__type(value, struct tyr_lpm_val);
} tyr_lpm SEC(".maps");

struct scratch {
	char buf[TYR_SCRATCH_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} tyr_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tyr_exe_key);
} tyr_exe_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tyr_upath);
} tyr_upath SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TYR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tyr_counters SEC(".maps");

/* Events are staged here, then copied into the ring with their used size only. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tyr_event);
} tyr_event_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TYR_RINGBUF_SIZE);
} tyr_events SEC(".maps");

/* Entry-time allow cache (see tyr_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TYR_ECACHE_MAX);
	__type(key, struct tyr_ekey);
	__type(value, struct tyr_eval);
} tyr_ecache SEC(".maps");

/* Allow-event suppression windows (see tyr_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TYR_ALLOWS_MAX);
	__type(key, struct tyr_akey);
	__type(value, struct tyr_aval);
} tyr_allows SEC(".maps");

/* Keys of windows that got their first suppressed allow: tyrd's sweep watches them. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, TYR_ALLOW_QUEUE_MAX);
	__type(value, struct tyr_akey);
} tyr_allow_queue SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&tyr_counters, &which);
	if (c)
		*c += 1;
}

/* Bytes of struct file read at once for f_mode, f_flags and f_path (read_file). */
#define FILE_SPAN 128

/* What identifies a dentry's name besides its address (see tyr_vkey), in the order of
 * struct dentry's d_parent, d_name (hash_len, name) and d_inode. */
struct dent_id {
	__u64 parent;
	__u64 name_hash_len;
	__u64 name;
	__u64 inode;
};

/* The keys of the verdict cache and the allow windows, built per CPU (not on the stack:
 * 6.1 allows 512 bytes of stack for a program's whole call chain). */
struct tyr_keys {
	struct dent_id id;
	struct tyr_vkey v;
	struct tyr_akey a;
	struct tyr_vval vv;
	struct tyr_aval av;
	/* The entry cache's key, and the epoch and namespace generation read before deciding. */
	struct tyr_ekey e;
	struct tyr_eval ev;
	/* tyr_allow_check keyed a window for the event being sent. */
	__u64 window;
	/* The namespace generation decide_file read before deciding (in this run). */
	__u64 nsgen;
	/* The fields of an opened file, read at once (read_file). */
	__u8 file[FILE_SPAN + 16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tyr_keys);
} tyr_keys SEC(".maps");

/* The key scratch with the identity of dentry filled in; NULL without one (nothing is then
 * cached or suppressed). The four fields are adjacent in struct dentry on the kernels Tyr
 * supports: one read then, else three. */
static __always_inline struct tyr_keys *dentry_keys(struct dentry *dentry)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	if (!ks || !dentry)
		return NULL;
	__u32 parent = bpf_core_field_offset(struct dentry, d_parent);
	if (bpf_core_field_offset(struct dentry, d_name) == parent + 8 &&
	    bpf_core_field_offset(struct dentry, d_inode) == parent + 24) {
		bpf_probe_read_kernel(&ks->id, sizeof(ks->id), (void *)dentry + parent);
		return ks;
	}
	ks->id.parent = (__u64)BPF_CORE_READ(dentry, d_parent);
	ks->id.name_hash_len = BPF_CORE_READ(dentry, d_name.hash_len);
	ks->id.inode = (__u64)BPF_CORE_READ(dentry, d_inode);
	return ks;
}

/* ---- canonical path of a struct path, written backwards into the scratch buffer ---- */

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	int pos;
	int done;
	int err;
};

static long path_step(__u32 i, void *data)
{
	struct path_walk *w = data;
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	if (!s) {
		w->err = 1;
		return 1;
	}
	struct dentry *d = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mnt_root || d == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (d != mnt_root || up == mnt || !up) {
			w->done = 1;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	__u32 len = BPF_CORE_READ(d, d_name.len);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	int pos = w->pos - (int)len - 1;
	if (len > 255 || pos < 1) {
		w->err = 1;
		return 1;
	}
	bpf_probe_read_kernel(&s->buf[(pos + 1) & PATH_MASK], len & 255, name);
	s->buf[pos & PATH_MASK] = '/';
	w->pos = pos;
	w->dentry = parent;
	return 0;
}

/* The built path: buf[pos .. TYR_PATH_MAX). bad = too long/deep or unreadable. */
struct built_path {
	__u32 pos;
	__u32 len;
	int built;
	int bad;
};

/* Global functions are verified once, not once per call site: this keeps the verifier's
 * work (and load time) small. Kernel pointers are passed as scalars. */
__noinline int tyr_build_path(struct built_path *out, __u64 dentry_ptr, __u64 vfsmnt_ptr)
{
	struct dentry *dentry = (struct dentry *)dentry_ptr;
	struct vfsmount *vfsmnt = (struct vfsmount *)vfsmnt_ptr;
	struct path_walk w = {
		.dentry = dentry,
		.mnt = (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt)),
		.pos = TYR_PATH_MAX,
	};
	if (!out)
		return 0;
	out->built = 1;
	out->bad = 1;
	if (!dentry || !vfsmnt)
		return 0;
	bpf_loop(TYR_MAX_DEPTH, path_step, &w, 0);
	if (!w.done || w.err)
		return 0;
	if (w.pos == TYR_PATH_MAX) {
		__u32 zero = 0;
		struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
		if (!s)
			return 0;
		w.pos = TYR_PATH_MAX - 1;
		s->buf[w.pos & PATH_MASK] = '/';
	}
	out->pos = w.pos;
	out->len = TYR_PATH_MAX - w.pos;
	out->bad = 0;
	return 0;
}

static __always_inline void build_path(struct built_path *out, struct dentry *dentry,
				       struct vfsmount *vfsmnt)
{
	tyr_build_path(out, (__u64)dentry, (__u64)vfsmnt);
}

/* f_mode, f_flags and f_path of f: one read of the bytes spanning them when they lie within
 * FILE_SPAN bytes (as on the kernels Tyr supports), else three. */
static __always_inline void read_file(struct file *f, unsigned int *fmode, unsigned int *oflags,
				      struct path *fpath)
{
	__u32 zero = 0;
	__u32 mo = bpf_core_field_offset(struct file, f_mode);
	__u32 fo = bpf_core_field_offset(struct file, f_flags);
	__u32 po = bpf_core_field_offset(struct file, f_path);
	__u32 lo = mo < fo ? mo : fo;
	lo = (po < lo ? po : lo) & ~7U;
	__u32 hi = mo > fo ? mo + 4 : fo + 4;
	hi = po + 16 > hi ? po + 16 : hi;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	if (ks && hi - lo <= FILE_SPAN &&
	    !bpf_probe_read_kernel(ks->file, FILE_SPAN, (void *)f + lo)) {
		__builtin_memcpy(fmode, &ks->file[(mo - lo) & (FILE_SPAN - 1)], 4);
		__builtin_memcpy(oflags, &ks->file[(fo - lo) & (FILE_SPAN - 1)], 4);
		__builtin_memcpy(fpath, &ks->file[(po - lo) & (FILE_SPAN - 1)], 16);
		return;
	}
	*fmode = BPF_CORE_READ(f, f_mode);
	*oflags = BPF_CORE_READ(f, f_flags);
	BPF_CORE_READ_INTO(fpath, f, f_path);
}

/* ---- paths named by a user string, resolved at syscall entry ---- */

/* The caller's file of descriptor fd (NULL when there is none). The task, file table and fd
 * array are read with direct (BTF) loads; only the array slot needs a helper call. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return NULL;
	unsigned int max = fdt->max_fds;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	if (!fds || (unsigned long)fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

#define AT_FDCWD -100
/* Input bytes normalised per callback. */
#define NORM_CHUNK 4

struct norm_walk {
	__u32 in_len;
	__u32 out;
	__u32 comp;
	__u32 depth;
	__u8 has_comp;
	__u8 err;
};

/* Ends the component being written: "", "." and ".." are removed (".." with its parent). */
static __always_inline void norm_end(struct norm_walk *w, struct tyr_upath *u, struct scratch *s)
{
	if (!w->has_comp)
		return;
	w->has_comp = 0;
	__u32 len = w->out - w->comp - 1;
	char c1 = s->buf[(w->comp + 1) & SCRATCH_MASK];
	char c2 = s->buf[(w->comp + 2) & SCRATCH_MASK];
	if (len == 0 || (len == 1 && c1 == '.')) {
		w->out = w->comp;
		w->depth--;
	} else if (len == 2 && c1 == '.' && c2 == '.') {
		w->out = w->comp;
		w->depth--;
		if (w->depth > 0) {
			w->depth--;
			w->out = u->stack[w->depth & (TYR_MAX_DEPTH - 1)];
		}
	}
}

static long norm_step(__u32 i, void *data)
{
	struct norm_walk *w = data;
	__u32 zero = 0;
	struct tyr_upath *u = bpf_map_lookup_elem(&tyr_upath, &zero);
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	if (!u || !s) {
		w->err = 1;
		return 1;
	}
	for (__u32 j = 0; j < NORM_CHUNK; j++) {
		__u32 k = i * NORM_CHUNK + j;
		if (k > w->in_len)
			return 1;
		char c = k == w->in_len ? '/' : u->in[k & SCRATCH_MASK];
		if (c == '/') {
			norm_end(w, u, s);
			continue;
		}
		if (!w->has_comp) {
			if (w->depth >= TYR_MAX_DEPTH || w->out >= TYR_PATH_MAX - 1) {
				w->err = 1;
				return 1;
			}
			u->stack[w->depth & (TYR_MAX_DEPTH - 1)] = w->out;
			w->depth++;
			w->comp = w->out;
			s->buf[w->out & SCRATCH_MASK] = '/';
			w->out++;
			w->has_comp = 1;
		}
		if (w->out >= TYR_PATH_MAX - 1) {
			w->err = 1;
			return 1;
		}
		s->buf[w->out & SCRATCH_MASK] = c;
		w->out++;
	}
	return 0;
}

/* The canonical form of the user path string `upath` as the kernel will look it up: joined
 * to the process root (absolute) or to dirfd / the cwd (relative), with ".", ".." and empty
 * components removed, into buf[0 .. len). Symlinks inside the string are not followed.
 * Anything unreadable or too long or deep is bad (fails closed). Global: verified once. */
__noinline int tyr_resolve_user(struct built_path *out, __s32 dfd, __u64 upath)
{
	__u32 zero = 0;
	char c0 = 0;
	if (!out)
		return 0;
	out->built = 1;
	out->bad = 1;
	struct tyr_upath *u = bpf_map_lookup_elem(&tyr_upath, &zero);
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	if (!u || !s || bpf_probe_read_user(&c0, 1, (const void *)upath))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct dentry *dentry;
	struct vfsmount *mnt;
	if (c0 == '/') {
		dentry = BPF_CORE_READ(task, fs, root.dentry);
		mnt = BPF_CORE_READ(task, fs, root.mnt);
	} else if (dfd == AT_FDCWD) {
		dentry = BPF_CORE_READ(task, fs, pwd.dentry);
		mnt = BPF_CORE_READ(task, fs, pwd.mnt);
	} else {
		struct file *f = fd_file(dfd);
		if (!f)
			return 0;
		dentry = BPF_CORE_READ(f, f_path.dentry);
		mnt = BPF_CORE_READ(f, f_path.mnt);
	}
	/* The base directory, built into out (then replaced by the result). */
	tyr_build_path(out, (__u64)dentry, (__u64)mnt);
	if (out->bad || out->len >= TYR_PATH_MAX)
		return 0;
	out->bad = 1;
	__u32 blen = out->len & PATH_MASK;
	bpf_probe_read_kernel(u->in, blen, &s->buf[out->pos & PATH_MASK]);
	u->in[blen] = '/';
	long n = bpf_probe_read_user_str(&u->in[(blen + 1) & PATH_MASK], TYR_PATH_MAX,
					 (const void *)upath);
	if (n <= 0 || n >= TYR_PATH_MAX)
		return 0;
	u->str_off = blen + 1;
	u->str_len = n - 1;
	struct norm_walk w = {.in_len = blen + n};
	bpf_loop(TYR_SCRATCH_SIZE / NORM_CHUNK + 1, norm_step, &w, 0);
	if (w.err)
		return 0;
	if (w.out == 0) {
		s->buf[0] = '/';
		w.out = 1;
	}
	out->pos = 0;
	out->len = w.out;
	out->bad = 0;
	return 0;
}

/* ---- DFA walk ---- */

struct dfa_walk {
	struct tyr_dfa dfa;
	__u32 pos;
	__u32 len;
	__u32 state;
	int err;
};

/* Bytes walked per callback (one scratch lookup per callback, not per byte). */
#define DFA_CHUNK 8

static long dfa_step(__u32 i, void *data)
{
	struct dfa_walk *w = data;
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	if (!s) {
		w->err = 1;
		return 1;
	}
	for (__u32 j = 0; j < DFA_CHUNK; j++) {
		__u32 k = i * DFA_CHUNK + j;
		if (k >= w->len || w->state == w->dfa.dead)
			return 1;
		if (w->state >= w->dfa.nstates) {
			w->err = 1;
			return 1;
		}
		__u8 b = s->buf[(w->pos + k) & SCRATCH_MASK];
		__u32 ci = w->dfa.class_off + b;
		__u16 *cls = bpf_map_lookup_elem(&tyr_classes, &ci);
		if (!cls || *cls >= w->dfa.nclasses) {
			w->err = 1;
			return 1;
		}
		__u32 ni = w->dfa.next_off + w->state * w->dfa.nclasses + *cls;
		__u32 *next = bpf_map_lookup_elem(&tyr_next, &ni);
		if (!next) {
			w->err = 1;
			return 1;
		}
		w->state = *next;
	}
	return 0;
}

/* Walks buf[pos .. pos + len); returns the final state or -1 on an inconsistent table. */
static __always_inline long dfa_run(const struct tyr_dfa *dfa, __u32 pos, __u32 len)
{
	struct dfa_walk w = {.dfa = *dfa, .pos = pos, .len = len, .state = dfa->start};
	if (len > TYR_PATH_MAX)
		return -1;
	bpf_loop((len + DFA_CHUNK - 1) / DFA_CHUNK, dfa_step, &w, 0);
	if (w.err || w.state >= w.dfa.nstates)
		return -1;
	return w.state;
}

/* ---- candidates: first rule whose process filters pass ---- */

struct cand_walk {
	__u64 binary_mask;
	__u32 base;
	__u32 end;
	__u32 rule_off;
	__u32 nrules;
	__u32 rule;
	__u16 port;
	__u8 net;
	__u8 agent;
	__u8 verdict;
	__u8 found;
	__u8 err;
};

struct port_walk {
	__u32 off;
	__u16 port;
	__u8 hit;
	__u8 err;
};

static long port_step(__u32 i, void *data)
{
	struct port_walk *w = data;
	__u32 pi = w->off + i;
	struct tyr_port_range *r = bpf_map_lookup_elem(&tyr_ports, &pi);
	if (!r) {
		w->err = 1;
		return 1;
	}
	if (r->start <= w->port && w->port <= r->end) {
		w->hit = 1;
		return 1;
	}
	return 0;
}

static long cand_step(__u32 i, void *data)
{
	struct cand_walk *c = data;
	__u32 ci = c->base + i;
	if (ci >= c->end) {
		c->err = 1;
		return 1;
	}
	__u32 *pos = bpf_map_lookup_elem(&tyr_cands, &ci);
	if (!pos || *pos >= c->nrules) {
		c->err = 1;
		return 1;
	}
	__u32 ri = c->rule_off + *pos;
	struct tyr_rule *r = bpf_map_lookup_elem(&tyr_rules, &ri);
	if (!r) {
		c->err = 1;
		return 1;
	}
	if (r->binary_req && !(c->binary_mask & r->binary_req))
		return 0;
	if (r->agent_mask &&
	    (c->agent == 0 || c->agent > 63 || !(r->agent_mask & (1ULL << (c->agent & 63)))))
		return 0;
	/* No learned-domain mask yet (DNS learning is not built): domain rules never match. */
	if (r->domain_req)
		return 0;
	if (r->port_len) {
		/* Path resources have no port. */
		if (!c->net)
			return 0;
		struct port_walk w = {.off = r->port_off, .port = c->port};
		/* A refused loop (e.g. a port_len beyond bpf_loop's bound) means an inconsistent
		 * table: fail closed rather than skip the rule. */
		if (bpf_loop(r->port_len, port_step, &w, 0) < 0 || w.err) {
			c->err = 1;
			return 1;
		}
		if (!w.hit)
			return 0;
	}
	c->found = 1;
	c->verdict = r->verdict;
	c->rule = r->rule;
	return 1;
}

/* ---- layers ---- */

struct decide {
	__u64 binary_mask;
	/* Layers that apply: bit 0 (base) and the overlays of the process's agent type. */
	__u64 layers;
	/* Entry decisions: the user path string and its dirfd (0 = decide on dentry/mnt). */
	__u64 upath;
	__s32 dfd;
	/* Events: the decisions the event stands for (0 counts as 1). */
	__u32 count;
	struct built_path path;
	__u8 addr[16];
	__u16 port;
	__u8 family;
	/* The table slot (0 or 1). */
	__u8 slot;
	__u32 nlayers;
	__u32 layer;
	__u32 rule;
	__u8 action;
	__u8 agent;
	__u8 verdict;
	__u8 best_set;
	__u8 need_path;
	__u8 fail;
	/* Allow windows (tyr_akey): the mode of the open (or TYR_AKEY_EXEC) and the caller's
	 * TYR_PROC_INTERP. */
	__u8 mode;
	__u8 interp;
};

static __always_inline void fail_at(struct decide *d, __u32 layer)
{
	d->fail = 1;
	d->best_set = 1;
	d->verdict = TYR_VERDICT_DENY;
	d->layer = layer;
	d->rule = NO_RULE;
}

static long layer_step(__u32 li, void *data)
{
	struct decide *d = data;
	if (li >= d->nlayers)
		return 1;
	__u32 slot = d->slot & 1;
	if (!(d->layers & (1ULL << (li & (TYR_MAX_LAYERS - 1)))))
		return 0;
	__u32 ti = slot * TYR_TABLES_PER_SLOT + li * TYR_NUM_ACTIONS + d->action;
	struct tyr_table *t = bpf_map_lookup_elem(&tyr_tables, &ti);
	if (!t) {
		fail_at(d, li);
		return 1;
	}
	__u8 verdict = t->deflt;
	__u32 rule = NO_RULE;
	if (t->nrules) {
		__u32 off = t->any_off;
		__u32 len = t->any_len;
		__u8 net = d->action == TYR_ACTION_NET_CONNECT;
		if (net) {
			struct tyr_lpm_key k = {
				.prefixlen = 24 + (d->family == 4 ? 32 : 128),
				.slot = slot,
				.layer = li,
				.family = d->family,
			};
			__builtin_memcpy(k.addr, d->addr, sizeof(k.addr));
			struct tyr_lpm_val *v = bpf_map_lookup_elem(&tyr_lpm, &k);
			if (!v) {
				fail_at(d, li);
				return 1;
			}
			off = v->off;
			len = v->len;
		} else {
			if (!d->path.built) {
				d->need_path = 1;
				return 1;
			}
			if (d->path.bad) {
				fail_at(d, li);
				return 1;
			}
			if (t->has_dfa) {
				long state = dfa_run(&t->dfa, d->path.pos, d->path.len);
				if (state < 0) {
					fail_at(d, li);
					return 1;
				}
				__u32 ai = t->dfa.accept_off + (__u32)state;
				struct tyr_accept *acc = bpf_map_lookup_elem(&tyr_accept, &ai);
				if (!acc) {
					fail_at(d, li);
					return 1;
				}
				off = acc->off;
				len = acc->len;
			}
		}
		if (len > TYR_MAX_CANDIDATES) {
			fail_at(d, li);
			return 1;
		}
		struct cand_walk c = {
			.binary_mask = d->binary_mask,
			.base = t->cand_off + off,
			.end = t->cand_off + t->ncands,
			.rule_off = t->rule_off,
			.nrules = t->nrules,
			.agent = d->agent,
			.port = d->port,
			.net = net,
		};
		bpf_loop(len, cand_step, &c, 0);
		if (c.err) {
			fail_at(d, li);
			return 1;
		}
		if (c.found) {
			verdict = c.verdict;
			rule = c.rule;
		}
	}
	if (verdict > TYR_VERDICT_DENY)
		verdict = TYR_VERDICT_DENY;
	if (!d->best_set || verdict > d->verdict) {
		d->best_set = 1;
		d->verdict = verdict;
		d->layer = li;
		d->rule = rule;
	}
	return 0;
}

/* The layers that apply to d (the base, then the overlays of d->agent; filled by tyrd per
 * table slot); 0 when missing (fails closed). */
static __always_inline __u64 layer_mask(const struct decide *d)
{
	if (!d->agent)
		return 1;
	__u32 i = (d->slot & 1) * TYR_AGENTS + d->agent;
	__u64 *mask = bpf_map_lookup_elem(&tyr_agent_layers, &i);
	return mask ? *mask : 0;
}

/* Decides dp->action; builds the path into dp->path only when a table needs it. With
 * dp->upath set it returns undecided with need_path set instead: the caller resolves the
 * string (see decide(); kept out of this frame so that the call chain's stack fits 6.1's
 * 512 bytes). Global (verified once); works on a stack copy, as bpf_loop takes a stack
 * context. */
__noinline int tyr_decide(struct decide *dp, __u64 dentry, __u64 mnt)
{
	if (!dp)
		return 0;
	struct decide d = *dp;
	d.best_set = 0;
	d.need_path = 0;
	d.fail = 0;
	d.layers = layer_mask(&d);
	if (d.nlayers > TYR_MAX_LAYERS || !d.layers) {
		fail_at(&d, 0);
	} else {
		bpf_loop(TYR_MAX_LAYERS, layer_step, &d, 0);
		if (d.need_path) {
			if (d.upath) {
				*dp = d;
				return 0;
			}
			tyr_build_path(&d.path, dentry, mnt);
			d.best_set = 0;
			d.need_path = 0;
			bpf_loop(TYR_MAX_LAYERS, layer_step, &d, 0);
		}
		if (!d.best_set)
			fail_at(&d, 0);
	}
	*dp = d;
	return 0;
}

static __always_inline void decide(struct decide *d, struct dentry *dentry,
				   struct vfsmount *mnt)
{
	tyr_decide(d, (__u64)dentry, (__u64)mnt);
	if (d->need_path && d->upath) {
		tyr_resolve_user(&d->path, d->dfd, d->upath);
		tyr_decide(d, 0, 0);
	}
}

/* ---- events ---- */

/* Stages the fields every event has; NULL when the staging buffer is missing. */
static __always_inline struct tyr_event *event_head(struct decide *d,
						    const struct tyr_proc *proc, __u32 flags,
						    __u8 enforced, __u64 generation)
{
	__u32 zero = 0;
	struct tyr_event *ev = bpf_map_lookup_elem(&tyr_event_scratch, &zero);
	if (!ev)
		return NULL;
	__u64 id = bpf_get_current_pid_tgid();
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->discovered_id = proc ? proc->discovered_id : 0;
	ev->generation = generation;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->ppid = 0;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->rule = d->rule;
	ev->layer = d->layer;
	ev->open_flags = 0;
	ev->action = d->action;
	ev->verdict = d->verdict;
	ev->enforced = enforced;
	ev->agent_type_id = d->agent;
	ev->flags = flags | (d->fail ? TYR_EVENT_FAIL_CLOSED : 0) | TYR_EVENT_NO_PATH;
	ev->op = 0;
	ev->target = 0;
	ev->path_len = 0;
	__builtin_memcpy(ev->addr, d->addr, sizeof(ev->addr));
	ev->port = d->port;
	ev->family = d->family;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->count = d->count ? d->count : 1;
	ev->_pad3 = 0;
	return ev;
}

/* Sends the staged event with path_len bytes of path. Waking tyrd up costs the sender a
 * cross-CPU wake-up (several µs in a VM): allow events do not wake it until a quarter of the
 * ring is used (tyrd also polls the ring every 100 ms); deny and alert events always do. */
static __always_inline void event_send(struct tyr_event *ev, __u32 path_len)
{
	__u32 size = TYR_EVENT_HEADER + (path_len & PATH_MASK);
	__u64 flags = BPF_RB_FORCE_WAKEUP;
	if (ev->verdict == TYR_VERDICT_ALLOW &&
	    bpf_ringbuf_query(&tyr_events, BPF_RB_AVAIL_DATA) < TYR_RINGBUF_SIZE / 4)
		flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&tyr_events, ev, size, flags))
		count(TYR_COUNTER_RINGBUF_DROPS);
}

/* File and exec events: the parent and the canonical path are read from kernel memory.
 * Returns the event's timestamp (0 when it could not be staged). */
static __always_inline __u64 emit(struct decide *d, const struct tyr_proc *proc, __u32 flags,
				  __u8 enforced, __u32 open_flags, __u64 generation)
{
	__u32 zero = 0;
	struct tyr_event *ev = event_head(d, proc, flags, enforced, generation);
	if (!ev)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->open_flags = open_flags;
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	__u32 len = 0;
	if (s && d->path.built && !d->path.bad && d->path.len < TYR_PATH_MAX) {
		len = d->path.len & PATH_MASK;
		bpf_probe_read_kernel(ev->path, len, &s->buf[d->path.pos & PATH_MASK]);
		ev->path_len = len;
		ev->flags &= ~TYR_EVENT_NO_PATH;
	}
	/* Only the used part of the path goes into the ring. */
	event_send(ev, len);
	return ev->ts_ns;
}

/* The namespace generation now. */
static __always_inline __u64 ns_generation(void)
{
	__u32 zero = 0;
	__u64 *g = bpf_map_lookup_elem(&tyr_nsgen, &zero);
	return g ? *g : 0;
}

/* Whether window a is still open: surely while jiffies are below its bound, else by the boot
 * clock (then the bound moves on by the time left, counted in the longest jiffies). */
static __always_inline int window_open(struct tyr_aval *a)
{
	__u64 j = bpf_jiffies64();
	if (j < a->open_until_jiffies)
		return 1;
	__u64 age = bpf_ktime_get_boot_ns() - a->last_ns;
	__u64 window = TYR_ALLOW_WINDOW_NS - TYR_ALLOW_WINDOW_MARGIN_NS;
	if (age >= window)
		return 0;
	a->open_until_jiffies = j + (window - age) / TYR_MAX_JIFFY_NS;
	return 1;
}

/* The allow-window key of decision d on dentry/mnt (identity in ks->id) into ks->a. */
static __always_inline struct tyr_akey *window_key(struct tyr_keys *ks, const struct decide *d,
						   __u64 dentry, __u64 mnt, __u32 epoch)
{
	struct tyr_akey *k = &ks->a;
	__builtin_memset(k, 0, sizeof(*k));
	k->mnt = mnt;
	k->dentry = dentry;
	k->parent = ks->id.parent;
	k->name_hash_len = ks->id.name_hash_len;
	k->inode = ks->id.inode;
	k->binary_mask = d->binary_mask;
	k->tgid = bpf_get_current_pid_tgid() >> 32;
	k->epoch = epoch;
	k->agent = d->agent;
	k->mode = d->mode;
	k->interp = d->interp;
	return k;
}

/* Counts a repeat into window a (the first one queues key k for tyrd's sweep). */
static __always_inline void window_count(struct tyr_aval *a, struct tyr_akey *k)
{
	if (__sync_fetch_and_add(&a->pending, 1) == 0 && bpf_map_push_elem(&tyr_allow_queue, k, 0))
		count(TYR_COUNTER_ALLOW_UNQUEUED);
}

/* Whether an open by a caller that wants allow events repeats an allow of the same key whose
 * window is open, decided under the current namespace generation: then it is counted there
 * and needs no decision (1). ks holds the dentry's identity. */
static __always_inline int window_repeat(const struct decide *d, struct tyr_keys *ks,
					 struct dentry *dentry, struct vfsmount *mnt, __u32 epoch)
{
	if (!mnt || !epoch)
		return 0;
	struct tyr_akey *k = window_key(ks, d, (__u64)dentry, (__u64)mnt, epoch);
	struct tyr_aval *a = bpf_map_lookup_elem(&tyr_allows, k);
	if (!a || a->nsgen != ns_generation() || !window_open(a))
		return 0;
	window_count(a, k);
	return 1;
}

/* Whether the allow decided in *dp for dentry/mnt falls in the suppression window of an
 * earlier event of this process (1: then counted, not reported); else 2 when the event opens
 * a window (dp->count takes the allows suppressed before it; tyr_allow_open records the
 * window once the event is sent), 0 without a window. id_read: the key scratch already holds
 * dentry's identity and the namespace generation of the decision (decide_file in this run of
 * the program). Global: verified once, and its stack stays off the callers' frames. */
__noinline int tyr_allow_check(struct decide *dp, __u64 dentry, __u64 mnt, __u32 epoch,
			       int id_read)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	if (!ks)
		return 0;
	ks->window = 0;
	if (!dp || !mnt || !dentry || (!id_read && !dentry_keys((struct dentry *)dentry)))
		return 0;
	struct tyr_akey *k = window_key(ks, dp, dentry, mnt, epoch);
	struct tyr_aval *a = bpf_map_lookup_elem(&tyr_allows, k);
	if (a && window_open(a)) {
		window_count(a, k);
		return 1;
	}
	dp->count = 1 + (a ? (__u32)__sync_lock_test_and_set(&a->pending, 0) : 0);
	/* An exec window never stands for an open's decision (its mode differs). */
	ks->av.nsgen = id_read ? ks->nsgen : 0;
	ks->window = 1;
	return 2;
}

/* Opens the suppression window tyr_allow_check keyed for the event just sent (if any), at
 * ts, the event's timestamp. */
__noinline int tyr_allow_open(__u64 ts)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	if (!ks || !ks->window)
		return 0;
	ks->window = 0;
	if (!ts)
		return 0;
	ks->av.last_ns = ts;
	ks->av.pending = 0;
	ks->av.open_until_jiffies =
		bpf_jiffies64() + (TYR_ALLOW_WINDOW_NS - TYR_ALLOW_WINDOW_MARGIN_NS) / TYR_MAX_JIFFY_NS;
	bpf_map_update_elem(&tyr_allows, &ks->a, &ks->av, BPF_ANY);
	return 0;
}

/* Whether the caller's thread group was killed (and reported) by a deny at syscall entry. */
static __always_inline int killed_at_entry(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&tyr_entry_killed, &tgid) != NULL;
}

/* Whether allow events of the caller are reported: classified agents', or everyone's. */
static __always_inline int wants_allows(const struct tyr_proc *proc, const struct tyr_config *cfg)
{
	return (proc && proc->agent_type_id) || (cfg->flags & TYR_CONFIG_ALLOW_EVENTS_ALL);
}

/* Kills on deny and reports per the events rule; builds the path for allow events (an allow
 * in the suppression window of an earlier event is only counted). A deny of a process that
 * a deny at syscall entry already killed is not reported again. */
static __always_inline void enforce(struct decide *d, const struct tyr_proc *proc,
				    struct tyr_config *cfg, struct dentry *dentry,
				    struct vfsmount *mnt, __u32 open_flags, int id_read)
{
	__u32 flags = 0;
	__u8 enforced = TYR_ENFORCED_NONE;
	if (d->fail)
		count(TYR_COUNTER_FAIL_CLOSED);
	if (d->verdict == TYR_VERDICT_DENY) {
		/* Already killed by the entry decision of this syscall: reported there. */
		int reported = killed_at_entry();
		bpf_send_signal(SIGKILL);
		if (reported)
			return;
		enforced = TYR_ENFORCED_KILLED;
	} else if (d->verdict == TYR_VERDICT_ALLOW) {
		if (!wants_allows(proc, cfg))
			return;
		int window = tyr_allow_check(d, (__u64)dentry, (__u64)mnt, cfg->epoch, id_read);
		if (window == 1)
			return;
		if (window == 2)
			flags = TYR_EVENT_WINDOW;
	}
	if (!d->path.built)
		build_path(&d->path, dentry, mnt);
	tyr_allow_open(emit(d, proc, flags, enforced, open_flags, cfg->generation));
}

static __always_inline int doomed(__u32 tgid)
{
	__u32 zero = 0;
	__u64 *alarm = bpf_map_lookup_elem(&tyr_alarm, &zero);
	if (!alarm || !*alarm)
		return 0;
	return bpf_map_lookup_elem(&tyr_doomed, &tgid) != NULL;
}

static __always_inline void doom(__u32 tgid)
{
	__u32 zero = 0, one = 1;
	__u64 *alarm = bpf_map_lookup_elem(&tyr_alarm, &zero);
	/* Counted once per process (a second update of the same tgid fails with EEXIST). */
	if (!bpf_map_update_elem(&tyr_doomed, &tgid, &one, BPF_NOEXIST) && alarm)
		__sync_fetch_and_add(alarm, 1);
}

/* The decision for a process that should be governed but has no entry (its identity could
 * not be recorded): deny, fail-closed, counted. Shared by both tiers. */
static __always_inline void doomed_decision(struct decide *d)
{
	count(TYR_COUNTER_FAIL_CLOSED);
	d->verdict = TYR_VERDICT_DENY;
	d->layer = 0;
	d->rule = NO_RULE;
	d->fail = 1;
	d->path.built = 1;
	d->path.bad = 1;
}

/* A doomed process on the tracepoint tier: killed. */
static __always_inline void kill_doomed(struct decide *d, struct tyr_config *cfg)
{
	bpf_send_signal(SIGKILL);
	doomed_decision(d);
	emit(d, NULL, 0, TYR_ENFORCED_KILLED, 0, cfg->generation);
}

/* The configuration of the table slot in use; *slot receives the slot. */
static __always_inline struct tyr_config *active_config(__u32 *slot)
{
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&tyr_active, &zero);
	__u32 s = active ? (*active & 1) : 0;
	*slot = s;
	return bpf_map_lookup_elem(&tyr_config, &s);
}

/* Whether a process without identity needs no decision for the actions in `actions` (a
 * bit mask): the base layer has no rules for them and allows, and allow events of such
 * processes are not wanted. */
static __always_inline int quiet(const struct tyr_config *cfg, __u32 actions)
{
	return !(cfg->flags & TYR_CONFIG_ALLOW_EVENTS_ALL) &&
	       (cfg->base_quiet & actions) == actions;
}

#define READ_WRITE ((1 << TYR_ACTION_FILE_READ) | (1 << TYR_ACTION_FILE_WRITE))

/* The prologue of a file decision, shared by both tiers: the active configuration (NULL:
 * no tables, nothing to decide), the caller's identity in *proc and d; *is_doomed when the
 * caller has no identity but must be refused without a decision. */
static __always_inline struct tyr_config *begin(struct decide *d, struct tyr_proc **proc,
						int *is_doomed)
{
	__u32 slot;
	*proc = NULL;
	*is_doomed = 0;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg || cfg->nlayers == 0)
		return NULL;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tyr_proc *p = bpf_map_lookup_elem(&tyr_procs, &tgid);
	d->slot = slot;
	d->nlayers = cfg->nlayers;
	d->action = TYR_ACTION_FILE_READ;
	if (p) {
		d->agent = p->agent_type_id;
		d->binary_mask = p->binary_mask;
	} else {
		*is_doomed = doomed(tgid);
	}
	*proc = p;
	return cfg;
}

/* ---- file opens: decide at syscall exit on the returned fd's struct file ---- */

/* Decides an open of mode `fmode` into `d` (whose action is file_read): a read-write open is
 * decided as a read and as a write, and the stricter decision is kept (the read on a tie).
 * Shared by the tracepoint tier (after the open) and the LSM tier (before it). */
static __always_inline void decide_open(struct decide *d, struct dentry *dentry,
					struct vfsmount *mnt, unsigned int fmode)
{
	__u8 verdict = 0, fail = 0;
	__u32 layer = 0, rule = NO_RULE;
	int decided = 0;
	if (fmode & FMODE_READ) {
		decide(d, dentry, mnt);
		verdict = d->verdict;
		layer = d->layer;
		rule = d->rule;
		fail = d->fail;
		decided = 1;
	}
	if (fmode & FMODE_WRITE) {
		d->action = TYR_ACTION_FILE_WRITE;
		decide(d, dentry, mnt);
		if (decided && d->verdict <= verdict) {
			d->action = TYR_ACTION_FILE_READ;
			d->verdict = verdict;
			d->layer = layer;
			d->rule = rule;
			d->fail = fail;
		}
	}
}

/* A governed interpreter or loader reading a file may be about to run it (`sh script`,
 * `ld.so ./prog`): unless the open is already denied, the file is also decided as an exec,
 * and an exec deny wins. Shared by both tiers. */
static __always_inline void interp_open(struct decide *d, const struct tyr_proc *proc,
					struct dentry *dentry, struct vfsmount *mnt,
					unsigned int fmode)
{
	if (!proc || !(proc->flags & TYR_PROC_INTERP) || !(fmode & FMODE_READ) ||
	    d->verdict == TYR_VERDICT_DENY)
		return;
	/* The open's decision is kept aside (no second struct decide: the stack is small). */
	__u8 action = d->action, verdict = d->verdict, fail = d->fail;
	__u32 layer = d->layer, rule = d->rule;
	d->action = TYR_ACTION_EXEC;
	decide(d, dentry, mnt);
	if (d->verdict == TYR_VERDICT_DENY)
		return;
	d->action = action;
	d->verdict = verdict;
	d->fail = fail;
	d->layer = layer;
	d->rule = rule;
}

/* decide_open then interp_open, through the verdict cache (tyr_maps.h): the decision of the
 * same path identity, caller identity and mode is reused while the table epoch and the
 * namespace generation (read before deciding) are those it was computed with. A decision
 * that failed closed is never stored. A reused decision leaves the path unbuilt (built later
 * only when an event needs it). Shared by both tiers. */
static __always_inline void decide_file(struct decide *d, const struct tyr_proc *proc,
					const struct tyr_config *cfg, struct dentry *dentry,
					struct vfsmount *mnt, struct tyr_keys *ks, unsigned int fmode)
{
	__u64 nsgen = ns_generation();
	__u32 epoch = cfg->epoch;
	int cacheable = ks && dentry && mnt && epoch;
	if (ks)
		ks->nsgen = nsgen;
	if (ks && cacheable) {
		struct tyr_vkey *k = &ks->v;
		__builtin_memset(k, 0, sizeof(*k));
		k->mnt = (__u64)mnt;
		k->dentry = (__u64)dentry;
		k->parent = ks->id.parent;
		k->name_hash_len = ks->id.name_hash_len;
		k->inode = ks->id.inode;
		k->binary_mask = d->binary_mask;
		k->agent = d->agent;
		k->fmode = fmode & (FMODE_READ | FMODE_WRITE);
		k->interp = proc ? proc->flags & TYR_PROC_INTERP : 0;
		struct tyr_vval *v = bpf_map_lookup_elem(&tyr_vcache, k);
		if (v && v->epoch == epoch && v->nsgen == nsgen) {
			d->action = v->action;
			d->verdict = v->verdict;
			d->layer = v->layer;
			d->rule = v->rule;
			d->fail = 0;
			return;
		}
	}
	decide_open(d, dentry, mnt, fmode);
	interp_open(d, proc, dentry, mnt, fmode);
	if (!ks || !cacheable || d->fail)
		return;
	struct tyr_vval *v = &ks->vv;
	__builtin_memset(v, 0, sizeof(*v));
	v->nsgen = nsgen;
	v->epoch = epoch;
	v->layer = d->layer;
	v->rule = d->rule;
	v->action = d->action;
	v->verdict = d->verdict;
	bpf_map_update_elem(&tyr_vcache, &ks->v, v, BPF_ANY);
}

/* Kills a governed caller (or one already doomed) and reports a deny of `action` without a
 * path; returns 1 then, 0 for a caller the tables do not govern. Its uses: io_uring (flags
 * TYR_EVENT_IO_URING), whose opens, reads and connects never pass the syscall hooks; a
 * syscall this tier cannot decide (TYR_EVENT_FAIL_CLOSED); an access to process `target`
 * (op TYR_OP_*, see process_access). Not inlined: its frame stays off the syscall
 * programs' deepest call chain (512 bytes in all). */
static __noinline int kill_governed(__u32 flags, __u32 action, __u32 op, __u32 target)
{
	__u32 slot;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg || cfg->nlayers == 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tyr_proc *proc = bpf_map_lookup_elem(&tyr_procs, &tgid);
	struct decide d = {.action = action, .verdict = TYR_VERDICT_DENY, .rule = NO_RULE,
			   .fail = !!(flags & TYR_EVENT_FAIL_CLOSED)};
	if (proc)
		d.agent = proc->agent_type_id;
	else if (doomed(tgid))
		doomed_decision(&d);
	else
		return 0;
	bpf_send_signal(SIGKILL);
	struct tyr_event *ev = event_head(&d, proc, flags & ~TYR_EVENT_FAIL_CLOSED,
					  TYR_ENFORCED_KILLED, cfg->generation);
	if (!ev)
		return 1;
	struct task_struct *task = bpf_get_current_task_btf();
	ev->ppid = task->real_parent->tgid;
	ev->op = op;
	ev->target = target;
	event_send(ev, 0);
	return 1;
}

#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

/* A governed caller acting on process `target` (ptrace attach, another process's memory or
 * environment, op TYR_OP_*): allowed only when the target is governed with the caller's
 * identity (agent type and binary mask), as a debugger's own child is. Any other process
 * could be made to do what the caller may not (read a protected file, connect), or holds
 * its secrets: the caller is killed (before a syscall acts: a pending SIGKILL aborts the
 * attach and the memory access; at an open's exit, before it uses the fd) and a deny of
 * FILE_WRITE (FILE_READ when `write` is 0) reported; returns 1 then. A caller in a child
 * pid namespace passes pids this map does not key: denied. */
static __always_inline int process_access(__u32 target, __u32 op, __u32 write)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tyr_proc *proc = bpf_map_lookup_elem(&tyr_procs, &tgid);
	if (proc) {
		struct tyr_proc *t = bpf_map_lookup_elem(&tyr_procs, &target);
		struct task_struct *task = bpf_get_current_task_btf();
		if (t && t->agent_type_id == proc->agent_type_id &&
		    t->binary_mask == proc->binary_mask && task->thread_pid->level == 0)
			return 0;
	}
	return kill_governed(0, write ? TYR_ACTION_FILE_WRITE : TYR_ACTION_FILE_READ, op, target);
}

#define PROC_SUPER_MAGIC 0x9fa0

/* The pid of the process whose /proc/PID/mem or /proc/PID/environ (or task/TID/...) dentry
 * is (ks holding its identity); 0 for any other file. Names of other lengths cost nothing. */
static __always_inline __u32 proc_file_target(struct dentry *dentry, struct tyr_keys *ks)
{
	__u32 len = ks->id.name_hash_len >> 32;
	if (len != 3 && len != 7)
		return 0;
	/* The name with its NUL, as little-endian words: "mem", "environ". */
	__u64 name = 0;
	const unsigned char *np = BPF_CORE_READ(dentry, d_name.name);
	if (bpf_probe_read_kernel(&name, sizeof(name), np))
		return 0;
	int mem = len == 3 && (name & 0xffffffff) == 0x006d656dULL;
	int env = len == 7 && name == 0x006e6f7269766e65ULL;
	if (!mem && !env)
		return 0;
	if (BPF_CORE_READ(dentry, d_sb, s_magic) != PROC_SUPER_MAGIC)
		return 0;
	struct proc_inode *pi = (void *)ks->id.inode -
				bpf_core_field_offset(struct proc_inode, vfs_inode);
	struct pid *pid = BPF_CORE_READ(pi, pid);
	/* numbers[0].nr, the pid in the initial namespace (numbers is a flexible array). */
	int nr = 0;
	if (pid)
		bpf_probe_read_kernel(&nr, sizeof(nr),
				      (void *)pid + bpf_core_field_offset(struct pid, numbers));
	return nr;
}

static __always_inline int on_open(long ret)
{
	struct decide d = {};
	struct tyr_proc *proc;
	int is_doomed;
	if (ret < 0)
		return 0;
	struct tyr_config *cfg = begin(&d, &proc, &is_doomed);
	if (!cfg)
		return 0;
	if (is_doomed) {
		kill_doomed(&d, cfg);
		return 0;
	}
	if (!proc && quiet(cfg, READ_WRITE))
		return 0;
	struct file *f = fd_file(ret);
	unsigned int fmode = FMODE_READ | FMODE_WRITE;
	unsigned int oflags = 0;
	struct path fpath = {};
	if (f) {
		read_file(f, &fmode, &oflags, &fpath);
	} else {
		/* The fd is already gone (a sibling thread closed it): the file cannot be named,
		 * so every table with rules fails closed, for reading and for writing. */
		d.path.built = 1;
		d.path.bad = 1;
	}
	if (!(fmode & (FMODE_READ | FMODE_WRITE)))
		return 0;
	struct dentry *dentry = fpath.dentry;
	struct vfsmount *mnt = fpath.mnt;
	struct tyr_keys *ks = dentry_keys(dentry);
	if (proc && ks) {
		__u32 target = proc_file_target(dentry, ks);
		if (target && process_access(target, TYR_OP_PROC_FILE, fmode & FMODE_WRITE))
			return 0;
	}
	d.mode = fmode & (FMODE_READ | FMODE_WRITE);
	d.interp = proc ? proc->flags & TYR_PROC_INTERP : 0;
	if (ks && wants_allows(proc, cfg) && window_repeat(&d, ks, dentry, mnt, cfg->epoch))
		return 0;
	decide_file(&d, proc, cfg, dentry, mnt, ks, fmode);
	enforce(&d, proc, cfg, dentry, mnt, oflags, ks != NULL);
	return 0;
}

/* ---- syscall entry: O_CREAT/O_TRUNC opens, governed opens, link, rename, io_uring ----
 *
 * A kill at syscall entry does not stop the syscall: a denied one is also made to fail by
 * emptying its path string in the caller's memory (the kernel copies it after this
 * tracepoint, finds "" and returns ENOENT). The kill is sent first and the string emptied
 * last, just before the kernel reads it. */

#define O_ACCMODE 3
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_PATH 010000000
#define RENAME_EXCHANGE 2

/* Set by tyrd before loading: 1 when the kernel lets programs write user memory (no
 * integrity lockdown). At 0 the helper call is dead code, which the verifier skips. */
const volatile __u8 tyr_write_user = 0;

/* Makes the syscall fail by emptying its path string. Called last, after the kill was sent
 * and the event built: the kernel copies the string right after the program returns, so a
 * sibling thread restoring it has the shortest window, and the kill sent first may already
 * have stopped it. A string that cannot be emptied (read-only memory, or no tyr_write_user)
 * is counted: the syscall may then run; the kill still lands. */
static __always_inline void empty_user_string(__u64 upath)
{
	char nul = 0;
	if (!tyr_write_user || bpf_probe_write_user((void *)upath, &nul, 1))
		count(TYR_COUNTER_UWRITE_FAILED);
}

/* In tyr_at_entry's op: decide a governed caller only, and on deny kill it; its string is
 * also emptied where BPF may write user memory, a failure not counted (an open without
 * O_CREAT/O_TRUNC changes nothing before the exit decision). */
#define ENTRY_KILL_ONLY 0x100
/* With ENTRY_KILL_ONLY: a deny also empties the string, because another thread group shares
 * the caller's file table and the kill would not stop it from using the fd. */
#define ENTRY_EMPTY 0x200

/* ---- the entry-time allow cache of kill-only decisions (tyr_ecache, see tyr_maps.h) ---- */

struct hash_walk {
	__u64 h;
	__u32 off;
	__u32 len;
	__u8 err;
};

/* FNV-1a over 8-byte words (the bytes past the end of the string masked out). */
static long hash_step(__u32 i, void *data)
{
	struct hash_walk *w = data;
	__u32 zero = 0;
	struct tyr_upath *u = bpf_map_lookup_elem(&tyr_upath, &zero);
	__u32 done = i * 8;
	if (!u || done >= w->len) {
		w->err = !u;
		return 1;
	}
	__u32 k = (w->off + done) & SCRATCH_MASK;
	if (k > TYR_SCRATCH_SIZE - 8) {
		w->err = 1;
		return 1;
	}
	__u64 word = *(__u64 *)&u->in[k];
	__u32 rest = w->len - done;
	if (rest < 8)
		word &= (1ULL << (rest * 8)) - 1;
	w->h = (w->h ^ word) * 0x100000001b3ULL;
	w->h ^= w->h >> 29;
	return 0;
}

/* Hashes the len bytes at off of the resolution scratch into the entry key scratch; 1 when
 * they cannot be hashed. Global: verified once. */
__noinline int tyr_entry_hash(__u32 off, __u32 len)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	struct hash_walk w = {.h = 0xcbf29ce484222325ULL, .off = off, .len = len};
	if (!ks || len >= TYR_PATH_MAX)
		return 1;
	bpf_loop((len + 7) / 8, hash_step, &w, 0);
	ks->e.hash = w.h;
	return w.err;
}

/* The entry cache key of a kill-only decision of the user string upath, with the epoch and
 * namespace generation read now (before deciding); NULL when it is not cached (unreadable
 * string, relative to a dirfd, no epoch). */
static __always_inline struct tyr_keys *entry_key(const struct decide *d,
						  const struct tyr_proc *proc,
						  const struct tyr_config *cfg, __s32 dfd,
						  __u64 upath, __u32 fmode)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	struct tyr_upath *u = bpf_map_lookup_elem(&tyr_upath, &zero);
	if (!ks || !u || !cfg->epoch)
		return NULL;
	ks->ev.nsgen = ns_generation();
	ks->ev.epoch = cfg->epoch;
	ks->ev._pad = 0;
	long n = bpf_probe_read_user_str(u->in, TYR_PATH_MAX, (const void *)upath);
	if (n <= 1 || n >= TYR_PATH_MAX)
		return NULL;
	struct tyr_ekey *k = &ks->e;
	__builtin_memset(k, 0, sizeof(*k));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct path p;
	if (u->in[0] != '/') {
		if (dfd != AT_FDCWD)
			return NULL;
		BPF_CORE_READ_INTO(&p, fs, pwd);
		k->base_dentry = (__u64)p.dentry;
		k->base_mnt = (__u64)p.mnt;
	}
	BPF_CORE_READ_INTO(&p, fs, root);
	k->root_dentry = (__u64)p.dentry;
	k->root_mnt = (__u64)p.mnt;
	k->binary_mask = d->binary_mask;
	k->len = n - 1;
	k->agent = d->agent;
	k->fmode = fmode & (FMODE_READ | FMODE_WRITE);
	k->interp = proc && (proc->flags & TYR_PROC_INTERP);
	if (tyr_entry_hash(0, n - 1))
		return NULL;
	return ks;
}

/* Whether the key in ks has a current allow. */
static __always_inline int entry_hit(struct tyr_keys *ks)
{
	struct tyr_eval *v = bpf_map_lookup_elem(&tyr_ecache, &ks->e);
	return v && v->epoch == ks->ev.epoch && v->nsgen == ks->ev.nsgen;
}

/* Stores the allow decided in d for the key in ks, only if the decision did not read the
 * string (no table needed the path) or read the very bytes hashed (a sibling thread may have
 * changed the string in between). */
static __always_inline void entry_store(const struct decide *d, struct tyr_keys *ks)
{
	__u32 zero = 0;
	if (d->fail || d->verdict != TYR_VERDICT_ALLOW)
		return;
	if (d->path.built) {
		struct tyr_upath *u = bpf_map_lookup_elem(&tyr_upath, &zero);
		__u64 h = ks->e.hash;
		if (d->path.bad || !u || u->str_len != ks->e.len ||
		    tyr_entry_hash(u->str_off, u->str_len) || ks->e.hash != h)
			return;
	}
	bpf_map_update_elem(&tyr_ecache, &ks->e, &ks->ev, BPF_ANY);
}

/* Decides the user path string upath (relative to dfd) for fmode; a deny refuses the syscall
 * and returns 1. Alerts of links and renames are reported here (no later hook sees them);
 * opens report theirs at exit. Global: verified once. */
__noinline int tyr_at_entry(__s32 dfd, __u64 upath, __u32 fmode, __u32 oflags, __u32 op)
{
	struct decide d = {.upath = upath, .dfd = dfd};
	struct tyr_proc *proc;
	int is_doomed;
	struct tyr_config *cfg = begin(&d, &proc, &is_doomed);
	if (!cfg || (!proc && (op & ENTRY_KILL_ONLY)) ||
	    (!proc && !is_doomed && quiet(cfg, READ_WRITE)))
		return 0;
	__u32 flags = TYR_EVENT_AT_ENTRY | (op & 0xff);
	if (is_doomed) {
		bpf_send_signal(SIGKILL);
		doomed_decision(&d);
		emit(&d, NULL, flags, TYR_ENFORCED_KILLED, oflags, cfg->generation);
		empty_user_string(upath);
		return 1;
	}
	struct tyr_keys *ks = NULL;
	if (op & ENTRY_KILL_ONLY) {
		ks = entry_key(&d, proc, cfg, dfd, upath, fmode);
		if (ks && entry_hit(ks))
			return 0;
	}
	decide_open(&d, NULL, NULL, fmode);
	/* Only a deny of the string: one that cannot be decided (e.g. not yet paged in, which
	 * is common for strings in a library's read-only data) is left to the exit decision. */
	if ((op & ENTRY_KILL_ONLY) && (d.fail || d.verdict != TYR_VERDICT_DENY)) {
		if (ks)
			entry_store(&d, ks);
		return 0;
	}
	if (d.fail)
		count(TYR_COUNTER_FAIL_CLOSED);
	__u8 enforced = TYR_ENFORCED_NONE;
	if (d.verdict == TYR_VERDICT_DENY) {
		bpf_send_signal(SIGKILL);
		__u32 tgid = bpf_get_current_pid_tgid() >> 32, one = 1;
		bpf_map_update_elem(&tyr_entry_killed, &tgid, &one, BPF_ANY);
		enforced = TYR_ENFORCED_KILLED;
	} else if (d.verdict != TYR_VERDICT_ALERT || !(op & 0xff)) {
		return 0;
	}
	if (!d.path.built)
		tyr_resolve_user(&d.path, dfd, upath);
	emit(&d, proc, flags, enforced, oflags, cfg->generation);
	if (enforced != TYR_ENFORCED_KILLED)
		return 0;
	if (!(op & ENTRY_KILL_ONLY) || (op & ENTRY_EMPTY)) {
		empty_user_string(upath);
	} else if (tyr_write_user) {
		/* A kill-only open is emptied too where BPF may write user memory, so that its fd
		 * never exists; failing changes nothing (the kill stands), so it is not counted. */
		char nul = 0;
		bpf_probe_write_user((void *)upath, &nul, 1);
	}
	return 1;
}

/* 1 while the LSM programs refuse opens, links and renames themselves (written by tyrd):
 * the entry decisions of those are then skipped (a kill would pre-empt the EPERM). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tyr_lsm_on SEC(".maps");

static __always_inline int entry_decides(void)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&tyr_lsm_on, &zero);
	return !on || !*on;
}

/* Who besides the calling thread could use an fd it opens before a kill at syscall exit
 * lands (the kill is delivered before the thread runs another instruction): 0 nobody, 1
 * other threads of its group, 2 another thread group sharing its file table (clone with
 * CLONE_FILES but not CLONE_THREAD). */
static __always_inline int fd_sharers(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	int threads = task->signal->nr_threads;
	int users = task->files->count.counter;
	if (users > threads)
		return 2;
	return threads != 1;
}

/* O_CREAT or O_TRUNC changes the file before the exit decision: decided here, as a write
 * (and a read when the access mode reads). Other opens of governed processes are decided
 * here too, by access mode, when another thread could use the fd before the exit decision's
 * kill: a deny kills the thread group before the open returns (and empties the string when
 * another group shares the file table); the exit decision on the opened file still holds. A
 * caller with one thread and a file table of its own is left to the exit decision alone
 * (checked first: a few direct loads, no map lookup). */
static __always_inline int enter_open(__s32 dfd, __u64 upath, __u64 flags)
{
	__u32 acc = flags & O_ACCMODE;
	if (flags & (O_CREAT | O_TRUNC)) {
		__u32 fmode = FMODE_WRITE | (acc != 1 ? FMODE_READ : 0);
		if (entry_decides())
			tyr_at_entry(dfd, upath, fmode, (__u32)flags, 0);
		return 0;
	}
	/* O_PATH and access mode 3 open for neither reading nor writing. */
	if ((flags & O_PATH) || acc == O_ACCMODE)
		return 0;
	int sharers = fd_sharers();
	if (!sharers)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&tyr_procs, &tgid) || !entry_decides())
		return 0;
	__u32 fmode = acc == 0 ? FMODE_READ : acc == 1 ? FMODE_WRITE : FMODE_READ | FMODE_WRITE;
	tyr_at_entry(dfd, upath, fmode, (__u32)flags,
		     ENTRY_KILL_ONLY | (sharers == 2 ? ENTRY_EMPTY : 0));
	return 0;
}

/* A link or rename gives the source a new name: a source this process may not read or
 * write keeps its name. The new name is a write (a rename replaces what is there; an
 * exchange also moves it, so it is a source too). */
static __always_inline int enter_rename(__s32 odfd, __u64 old, __s32 ndfd, __u64 new, __u32 op,
					__u64 flags)
{
	if (!entry_decides())
		return 0;
	if (tyr_at_entry(odfd, old, FMODE_READ | FMODE_WRITE, 0, op))
		return 0;
	__u32 fmode = FMODE_WRITE;
	if (op == TYR_EVENT_RENAME && (flags & RENAME_EXCHANGE))
		fmode |= FMODE_READ;
	tyr_at_entry(ndfd, new, fmode, 0, op | TYR_EVENT_TARGET);
	return 0;
}

/* ---- namespace generation: renames and mount changes make cached verdicts stale ---- */

static __always_inline int ns_bump(void)
{
	__u32 zero = 0;
	__u64 *g = bpf_map_lookup_elem(&tyr_nsgen, &zero);
	if (g)
		__sync_fetch_and_add(g, 1);
	return 0;
}

/* A new mount namespace copies mounts (possibly at the addresses of freed ones): bumped
 * before the copy, which nothing can use until the call made it. */
#define CLONE_NEWNS 0x00020000

/* ---- syscalls: one raw tracepoint at entry, one at exit ----
 *
 * tp_btf/sys_enter and tp_btf/sys_exit run for every syscall, native or 32-bit, and switch
 * on the call. The per-call `syscalls/` tracepoints cost more per call (each builds a perf
 * record first) and never fire for 32-bit calls on x86_64 (`int $0x80` from any process):
 * those would open files undecided. Each call the tier decides has a `CALL_*` kind; the
 * numbers of each ABI map to it below. A rename is both decided and a namespace change. */
enum tyr_call {
	CALL_NONE,
	CALL_OPENAT,
	CALL_OPEN,
	CALL_CREAT,
	CALL_OPENAT2,
	CALL_OPEN_BY_HANDLE,
	CALL_PIDFD_GETFD,
	CALL_LINK,
	CALL_LINKAT,
	CALL_RENAME,
	CALL_RENAMEAT,
	CALL_RENAMEAT2,
	CALL_IO_URING,
	CALL_MOUNT, /* mount, umount, move_mount, pivot_root, fsmount, open_tree(_attr) */
	CALL_UNSHARE,
	CALL_CLONE,
	CALL_CLONE3,
	CALL_PTRACE,
	CALL_VM_READ,
	CALL_VM_WRITE,
	CALL_UNDECIDABLE, /* every call of an ABI this tier cannot decide */
};

/* Numbers every ABI shares (asm-generic, 403 and up). */
static __always_inline enum tyr_call common_call(long nr)
{
	switch (nr) {
	case 425: /* io_uring_setup */
	case 426: /* io_uring_enter */
		return CALL_IO_URING;
	case 428: /* open_tree */
	case 429: /* move_mount */
	case 432: /* fsmount */
	case 467: /* open_tree_attr */
		return CALL_MOUNT;
	case 435:
		return CALL_CLONE3;
	case 437:
		return CALL_OPENAT2;
	case 438:
		return CALL_PIDFD_GETFD;
	}
	return CALL_NONE;
}

#if defined(__TARGET_ARCH_x86)
/* x32 syscalls (kernels with CONFIG_X86_X32_ABI): the 64-bit numbers with this bit set, plus
 * x32's own entries from 512 for calls with compat arguments. */
#define X32_SYSCALL_BIT 0x40000000

/* x86_64 and x32 (arch/x86/entry/syscalls/syscall_64.tbl). */
static __always_inline enum tyr_call native_call(long nr)
{
	if (nr & X32_SYSCALL_BIT) {
		nr &= ~X32_SYSCALL_BIT;
		switch (nr) {
		case 521: return CALL_PTRACE;
		case 539: return CALL_VM_READ;
		case 540: return CALL_VM_WRITE;
		}
	}
	switch (nr) {
	case 257: return CALL_OPENAT;
	case 2: return CALL_OPEN;
	case 85: return CALL_CREAT;
	case 304: return CALL_OPEN_BY_HANDLE;
	case 86: return CALL_LINK;
	case 265: return CALL_LINKAT;
	case 82: return CALL_RENAME;
	case 264: return CALL_RENAMEAT;
	case 316: return CALL_RENAMEAT2;
	case 165: /* mount */
	case 166: /* umount2 */
	case 155: /* pivot_root */
		return CALL_MOUNT;
	case 272: return CALL_UNSHARE;
	case 56: return CALL_CLONE;
	case 101: return CALL_PTRACE;
	case 310: return CALL_VM_READ;
	case 311: return CALL_VM_WRITE;
	}
	return common_call(nr);
}

/* ia32 (arch/x86/entry/syscalls/syscall_32.tbl): int $0x80, sysenter, 32-bit syscall. */
static __always_inline enum tyr_call compat_call(long nr)
{
	switch (nr) {
	case 295: return CALL_OPENAT;
	case 5: return CALL_OPEN;
	case 8: return CALL_CREAT;
	case 342: return CALL_OPEN_BY_HANDLE;
	case 9: return CALL_LINK;
	case 303: return CALL_LINKAT;
	case 38: return CALL_RENAME;
	case 302: return CALL_RENAMEAT;
	case 353: return CALL_RENAMEAT2;
	case 21: /* mount */
	case 22: /* umount */
	case 52: /* umount2 */
	case 217: /* pivot_root */
		return CALL_MOUNT;
	case 310: return CALL_UNSHARE;
	case 120: return CALL_CLONE;
	case 26: return CALL_PTRACE;
	case 347: return CALL_VM_READ;
	case 348: return CALL_VM_WRITE;
	}
	return common_call(nr);
}

#define TS_COMPAT 0x0002

/* Whether the current syscall is a 32-bit one (set on entry, cleared on the way out). */
static __always_inline int compat_syscall(struct pt_regs *regs)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return task->thread_info.status & TS_COMPAT;
}

static __always_inline __u64 syscall_nr(struct pt_regs *regs)
{
	return regs->orig_ax;
}

/* Argument i (0-5) of the current syscall. */
static __always_inline __u64 syscall_arg(struct pt_regs *regs, int compat, int i)
{
	if (compat) {
		switch (i) {
		case 0: return (__u32)regs->bx;
		case 1: return (__u32)regs->cx;
		case 2: return (__u32)regs->dx;
		case 3: return (__u32)regs->si;
		default: return (__u32)regs->di;
		}
	}
	switch (i) {
	case 0: return regs->di;
	case 1: return regs->si;
	case 2: return regs->dx;
	case 3: return regs->r10;
	default: return regs->r8;
	}
}
#elif defined(__TARGET_ARCH_arm64)
/* arm64 (asm-generic/unistd.h): no legacy open, creat, link or rename. */
static __always_inline enum tyr_call native_call(long nr)
{
	switch (nr) {
	case 56: return CALL_OPENAT;
	case 265: return CALL_OPEN_BY_HANDLE;
	case 37: return CALL_LINKAT;
	case 38: return CALL_RENAMEAT;
	case 276: return CALL_RENAMEAT2;
	case 40: /* mount */
	case 39: /* umount2 */
	case 41: /* pivot_root */
		return CALL_MOUNT;
	case 97: return CALL_UNSHARE;
	case 220: return CALL_CLONE;
	case 117: return CALL_PTRACE;
	case 270: return CALL_VM_READ;
	case 271: return CALL_VM_WRITE;
	}
	return common_call(nr);
}

/* AArch32 tasks: not decided call by call (their numbers are not mapped here); a governed
 * one is killed at its first syscall, fail closed. */
static __always_inline enum tyr_call compat_call(long nr)
{
	return CALL_UNDECIDABLE;
}

#define PSR_MODE32_BIT 0x10

static __always_inline int compat_syscall(struct pt_regs *regs)
{
	return regs->pstate & PSR_MODE32_BIT;
}

static __always_inline __u64 syscall_nr(struct pt_regs *regs)
{
	return regs->syscallno;
}

static __always_inline __u64 syscall_arg(struct pt_regs *regs, int compat, int i)
{
	return i == 0 ? regs->orig_x0 : regs->regs[i & 7];
}
#else
#error "tyr.bpf.c: syscall numbers for this architecture are missing"
#endif

/* In syscall_kind's result: the call is a 32-bit one. */
#define CALL_COMPAT 0x100

/* The call's kind, with CALL_COMPAT for a 32-bit call: numbers are checked for both ABIs
 * before the (dearer) ABI test, so an unrelated syscall costs two compare chains. */
static __always_inline __u32 syscall_kind(struct pt_regs *regs, long nr)
{
	enum tyr_call native = native_call(nr), ia32 = compat_call(nr);
	if (native == CALL_NONE && ia32 == CALL_NONE)
		return CALL_NONE;
	return compat_syscall(regs) ? ia32 | CALL_COMPAT : native;
}

SEC("tp_btf/sys_enter")
int tyr_sys_enter(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	__u32 call = syscall_kind(regs, ctx[1]);
	if (call == CALL_NONE)
		return 0;
	int compat = call & CALL_COMPAT;
#define ARG(i) syscall_arg(regs, compat, i)
	switch (call & ~CALL_COMPAT) {
	case CALL_OPENAT:
		return enter_open((__s32)ARG(0), ARG(1), ARG(2));
	case CALL_OPEN:
		return enter_open(AT_FDCWD, ARG(0), ARG(1));
	case CALL_CREAT:
		return enter_open(AT_FDCWD, ARG(0), O_CREAT | O_TRUNC | 1);
	case CALL_OPENAT2: {
		__u64 flags = 0;
		/* The kernel fails with EFAULT on an unreadable struct open_how. */
		if (bpf_probe_read_user(&flags, sizeof(flags), (const void *)ARG(2)))
			return 0;
		return enter_open((__s32)ARG(0), ARG(1), flags);
	}
	case CALL_LINK:
		return enter_rename(AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), TYR_EVENT_LINK, 0);
	case CALL_LINKAT:
		return enter_rename((__s32)ARG(0), ARG(1), (__s32)ARG(2), ARG(3), TYR_EVENT_LINK,
				    0);
	case CALL_RENAME:
		ns_bump();
		return enter_rename(AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), TYR_EVENT_RENAME, 0);
	case CALL_RENAMEAT:
		ns_bump();
		return enter_rename((__s32)ARG(0), ARG(1), (__s32)ARG(2), ARG(3),
				    TYR_EVENT_RENAME, 0);
	case CALL_RENAMEAT2:
		ns_bump();
		return enter_rename((__s32)ARG(0), ARG(1), (__s32)ARG(2), ARG(3),
				    TYR_EVENT_RENAME, ARG(4));
	case CALL_IO_URING:
		/* io_uring opens, reads and connects never pass the syscall hooks: governed
		 * processes may not set up or drive a ring (one inherited from an ungoverned
		 * parent included). */
		return kill_governed(TYR_EVENT_IO_URING, TYR_ACTION_FILE_READ, 0, 0);
	case CALL_UNDECIDABLE:
		return kill_governed(TYR_EVENT_FAIL_CLOSED, TYR_ACTION_FILE_READ, 0, 0);
	case CALL_PTRACE: {
		__u64 request = ARG(0);
		if (request == PTRACE_ATTACH || request == PTRACE_SEIZE)
			return process_access((__u32)ARG(1), TYR_OP_PTRACE, 1);
		return 0;
	}
	case CALL_VM_READ:
		return process_access((__u32)ARG(0), TYR_OP_VM_READ, 0);
	case CALL_VM_WRITE:
		return process_access((__u32)ARG(0), TYR_OP_VM_WRITE, 1);
	case CALL_MOUNT:
		return ns_bump();
	case CALL_UNSHARE:
	case CALL_CLONE:
		return (ARG(0) & CLONE_NEWNS) ? ns_bump() : 0;
	case CALL_CLONE3: {
		__u64 flags = 0;
		/* Unreadable arguments: the call fails with EFAULT; bumping costs nothing. */
		if (bpf_probe_read_user(&flags, sizeof(flags), (const void *)ARG(0)))
			return ns_bump();
		return (flags & CLONE_NEWNS) ? ns_bump() : 0;
	}
	default:
		return 0;
	}
#undef ARG
}

/* At exit: opens are decided on the file opened; renames and mount changes bump the
 * namespace generation again (a decision computed while the call ran is never reused). */
SEC("tp_btf/sys_exit")
int tyr_sys_exit(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	switch (syscall_kind(regs, syscall_nr(regs)) & ~CALL_COMPAT) {
	case CALL_OPENAT:
	case CALL_OPEN:
	case CALL_CREAT:
	case CALL_OPENAT2:
	case CALL_OPEN_BY_HANDLE:
	/* pidfd_getfd copies another process's fd, e.g. one a process opened and is killed
	 * for at syscall exit, in the window before it exits: decided as an open by the
	 * caller. */
	case CALL_PIDFD_GETFD:
		return on_open((long)ctx[1]);
	case CALL_RENAME:
	case CALL_RENAMEAT:
	case CALL_RENAMEAT2:
	case CALL_MOUNT:
		return ns_bump();
	default:
		return 0;
	}
}

/* ---- process identity ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tyr_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid)
		return 0;
	struct tyr_proc *p = bpf_map_lookup_elem(&tyr_procs, &ptgid);
	if (!p) {
		if (doomed(ptgid))
			doom(ctgid);
		return 0;
	}
	struct tyr_proc copy = *p;
	if (bpf_map_update_elem(&tyr_procs, &ctgid, &copy, BPF_ANY)) {
		count(TYR_COUNTER_FORK_FULL);
		doom(ctgid);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tyr_exit, struct task_struct *task)
{
	/* signal->live reaches 0 when the last thread exits (portable across kernels whose
	 * tracepoint lacks group_dead). */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&tyr_procs, &tgid);
	bpf_map_delete_elem(&tyr_entry_killed, &tgid);
	if (!bpf_map_delete_elem(&tyr_doomed, &tgid)) {
		__u32 zero = 0;
		__u64 *alarm = bpf_map_lookup_elem(&tyr_alarm, &zero);
		if (alarm && *alarm)
			__sync_fetch_and_add(alarm, -1);
	}
	return 0;
}

/* The executable-path key of path; NULL when the path does not fit the key. */
static __always_inline struct tyr_exe_key *exe_key(const struct built_path *path)
{
	__u32 zero = 0;
	if (path->bad || path->len >= TYR_EXE_KEY_LEN)
		return NULL;
	struct tyr_exe_key *key = bpf_map_lookup_elem(&tyr_exe_scratch, &zero);
	struct scratch *s = bpf_map_lookup_elem(&tyr_scratch, &zero);
	if (!key || !s)
		return NULL;
	__builtin_memset(key, 0, sizeof(*key));
	bpf_probe_read_kernel(key->path, path->len & (TYR_EXE_KEY_LEN - 1),
			      &s->buf[path->pos & PATH_MASK]);
	return key;
}

/* Agent type of an executable path (0 = none); only paths shorter than the key. */
static __always_inline __u32 exe_agent(const struct built_path *path)
{
	struct tyr_exe_key *key = exe_key(path);
	__u32 *agent = key ? bpf_map_lookup_elem(&tyr_exes, key) : NULL;
	return agent ? *agent : 0;
}

/* Whether the executable at path is an interpreter or loader (tyr_interps). */
static __always_inline int exe_interp(const struct built_path *path)
{
	struct tyr_exe_key *key = exe_key(path);
	return key && bpf_map_lookup_elem(&tyr_interps, key) != NULL;
}

/* The agent type an exec gives a process without one (0 = none): its launch cgroup's, else
 * its executable's (tyr_exes). Shared by both tiers. */
static __always_inline __u8 exec_agent(const struct built_path *path)
{
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 *by_cgroup = bpf_map_lookup_elem(&tyr_cgroups, &cg);
	__u32 a = by_cgroup ? *by_cgroup : exe_agent(path);
	return a > 255 ? 0 : a;
}

/* The binaries mask of the executable at path (the binaries DFA of cfg). Shared by both
 * tiers. */
static __always_inline __u64 exec_binary_mask(const struct tyr_config *cfg,
					      const struct built_path *path)
{
	if (!cfg->has_binaries || path->bad)
		return 0;
	long state = dfa_run(&cfg->binaries, path->pos, path->len);
	if (state < 0)
		return 0;
	__u32 mi = cfg->binaries.accept_off + (__u32)state;
	__u64 *mask = bpf_map_lookup_elem(&tyr_bin_masks, &mi);
	return mask ? *mask : 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tyr_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 slot;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg)
		return 0;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct tyr_proc *cur = bpf_map_lookup_elem(&tyr_procs, &tgid);
	struct decide d = {.slot = slot, .nlayers = cfg->nlayers, .action = TYR_ACTION_EXEC};
	if (!cur && doomed(tgid)) {
		kill_doomed(&d, cfg);
		return 0;
	}
	struct tyr_proc e = {};
	if (cur)
		e = *cur;
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct dentry *dentry = BPF_CORE_READ(exe, f_path.dentry);
	struct vfsmount *mnt = BPF_CORE_READ(exe, f_path.mnt);
	build_path(&d.path, dentry, mnt);

	/* Classify: an inherited identity is kept; else the launch cgroup, else the path. */
	if (!e.agent_type_id)
		e.agent_type_id = exec_agent(&d.path);
	e.flags = exe_interp(&d.path) ? TYR_PROC_INTERP : 0;
	e.binary_mask = exec_binary_mask(cfg, &d.path);
	if (e.agent_type_id || e.binary_mask || e.discovered_id) {
		if (bpf_map_update_elem(&tyr_procs, &tgid, &e, BPF_ANY)) {
			count(TYR_COUNTER_FORK_FULL);
			doom(tgid);
			kill_doomed(&d, cfg);
			return 0;
		}
	} else if (cur) {
		bpf_map_delete_elem(&tyr_procs, &tgid);
	}
	if (cfg->nlayers == 0)
		return 0;
	d.agent = e.agent_type_id;
	d.binary_mask = e.binary_mask;
	d.mode = TYR_AKEY_EXEC;
	decide(&d, dentry, mnt);
	struct tyr_proc *now = bpf_map_lookup_elem(&tyr_procs, &tgid);
	enforce(&d, now, cfg, dentry, mnt, 0, 0);
	return 0;
}

/* ---- network: cgroup connect4/6 and sendmsg4/6 return EPERM on deny (no kill) ---- */

/* Like tyr_decide, without paths (this program type cannot read kernel memory). */
__noinline int tyr_decide_net(struct decide *dp)
{
	if (!dp)
		return 0;
	struct decide d = *dp;
	d.best_set = 0;
	d.fail = 0;
	d.layers = layer_mask(&d);
	if (d.nlayers > TYR_MAX_LAYERS || !d.layers)
		fail_at(&d, 0);
	else
		bpf_loop(TYR_MAX_LAYERS, layer_step, &d, 0);
	if (!d.best_set)
		fail_at(&d, 0);
	*dp = d;
	return 0;
}

/* Decides the destination in d (family, addr, port) for the caller, both tiers: its layers,
 * or a fail-closed deny for a doomed caller. Returns its identity (NULL without one). */
static __always_inline struct tyr_proc *decide_connect(struct decide *d,
						       const struct tyr_config *cfg, __u32 slot)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tyr_proc *proc = bpf_map_lookup_elem(&tyr_procs, &tgid);
	d->slot = slot;
	d->nlayers = cfg->nlayers;
	d->action = TYR_ACTION_NET_CONNECT;
	d->rule = NO_RULE;
	if (proc) {
		d->agent = proc->agent_type_id;
		d->binary_mask = proc->binary_mask;
		tyr_decide_net(d);
	} else if (doomed(tgid)) {
		d->verdict = TYR_VERDICT_DENY;
		d->fail = 1;
	} else {
		tyr_decide_net(d);
	}
	if (d->fail)
		count(TYR_COUNTER_FAIL_CLOSED);
	return proc;
}

/* The allow window of the destination in d for the caller, as tyr_allow_check returns it:
 * an agent's repeated connects to one destination are reported once per window too. */
static __always_inline int connect_window(struct decide *d, __u32 epoch)
{
	__u32 zero = 0;
	struct tyr_keys *ks = bpf_map_lookup_elem(&tyr_keys, &zero);
	if (!ks)
		return 0;
	__builtin_memcpy(&ks->id.parent, d->addr, 8);
	__builtin_memcpy(&ks->id.name_hash_len, d->addr + 8, 8);
	ks->id.inode = (__u64)d->family << 16 | d->port;
	ks->nsgen = 0;
	d->mode = TYR_AKEY_CONNECT;
	return tyr_allow_check(d, 1, 1, epoch, 1);
}

/* 1 = let the connect through, 0 = EPERM. */
static __always_inline int on_connect(struct decide *d)
{
	__u32 slot;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg || cfg->nlayers == 0)
		return 1;
	struct tyr_proc *proc = decide_connect(d, cfg, slot);
	__u8 enforced = TYR_ENFORCED_NONE;
	__u32 flags = 0;
	int window = 0;
	if (d->verdict == TYR_VERDICT_DENY) {
		enforced = TYR_ENFORCED_BLOCKED;
	} else if (d->verdict == TYR_VERDICT_ALLOW) {
		if (!wants_allows(proc, cfg))
			return 1;
		window = connect_window(d, cfg->epoch);
		if (window == 2)
			flags = TYR_EVENT_WINDOW;
	}
	/* A repeat in an open window (1) is only counted. */
	struct tyr_event *ev = window == 1 ? NULL
					   : event_head(d, proc, flags, enforced, cfg->generation);
	if (ev) {
		event_send(ev, 0);
		if (window == 2)
			tyr_allow_open(ev->ts_ns);
	}
	int pass = enforced != TYR_ENFORCED_BLOCKED;
	/* The verifier must see 0 or 1 returned; clang would otherwise return `window` itself
	 * where it equals 1, a value the verifier cannot bound. */
	asm volatile("%0 &= 1" : "+r"(pass));
	return pass;
}

/* An IPv6 destination (words in network order) into d; IPv4-mapped as IPv4. */
static __always_inline void dest_ip6(struct decide *d, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		d->family = 4;
		__builtin_memcpy(d->addr, &w3, 4);
		return;
	}
	d->family = 6;
	__builtin_memcpy(d->addr, &w0, 4);
	__builtin_memcpy(d->addr + 4, &w1, 4);
	__builtin_memcpy(d->addr + 8, &w2, 4);
	__builtin_memcpy(d->addr + 12, &w3, 4);
}

/* Destination of a sock_addr hook into d. */
static __always_inline void dest4(struct decide *d, struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	d->family = 4;
	__builtin_memcpy(d->addr, &ip, 4);
	d->port = bpf_ntohs((__u16)ctx->user_port);
}

static __always_inline void dest6(struct decide *d, struct bpf_sock_addr *ctx)
{
	d->port = bpf_ntohs((__u16)ctx->user_port);
	dest_ip6(d, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
}

SEC("cgroup/connect4")
int tyr_connect4(struct bpf_sock_addr *ctx)
{
	struct decide d = {};
	dest4(&d, ctx);
	return on_connect(&d);
}

SEC("cgroup/connect6")
int tyr_connect6(struct bpf_sock_addr *ctx)
{
	struct decide d = {};
	dest6(&d, ctx);
	return on_connect(&d);
}

/* Unconnected UDP: each datagram's destination is decided like a connect. */
SEC("cgroup/sendmsg4")
int tyr_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct decide d = {};
	dest4(&d, ctx);
	return on_connect(&d);
}

SEC("cgroup/sendmsg6")
int tyr_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct decide d = {};
	dest6(&d, ctx);
	return on_connect(&d);
}
