// SPDX-License-Identifier: GPL-2.0
/* LSM tier: file opens, execs and connects denied with -EPERM (SPEC §8).
 *
 * This object is the tracepoint object (same maps, same decision code, included below) plus
 * the LSM programs. tyrd loads the tracepoint tier with its maps pinned and loads only the LSM
 * programs of this object on the same pinned maps: identity (fork/exec/exit) and the events
 * of allowed and alerted operations stay with the tracepoint programs, which run after the
 * operation succeeded. An LSM program decides before the operation: on deny it returns -EPERM
 * and reports `blocked`, so the operation never happens and the tracepoint programs (which
 * only see successful operations) neither kill nor report it again. */
#include "tyr.bpf.c"

#define EPERM 1
#define FMODE_EXEC 0x20
#define AF_INET 2
#define AF_INET6 10
/* sockaddr_in6 without sin6_scope_id: the shortest address inet6 connect accepts. */
#define SIN6_LEN_RFC2133 24

/* Reports a deny as blocked and returns -EPERM; anything else passes (0). */
static __always_inline int lsm_verdict(struct decide *d, const struct tyr_proc *proc,
				       struct tyr_config *cfg, struct dentry *dentry,
				       struct vfsmount *mnt, __u32 open_flags, __u32 flags)
{
	if (d->verdict != TYR_VERDICT_DENY)
		return 0;
	if (d->fail)
		count(TYR_COUNTER_FAIL_CLOSED);
	if (!d->path.built)
		build_path(&d->path, dentry, mnt);
	emit(d, proc, flags, TYR_ENFORCED_BLOCKED, open_flags, cfg->generation);
	return -EPERM;
}

/* A doomed process on the LSM tier: blocked. */
static __always_inline int block_doomed(struct decide *d, struct tyr_config *cfg, __u32 flags)
{
	doomed_decision(d);
	emit(d, NULL, flags, TYR_ENFORCED_BLOCKED, 0, cfg->generation);
	return -EPERM;
}

/* Opens for reading and/or writing, decided as the tracepoint tier does at syscall exit
 * (the stricter of read and write; read on a tie). Exec opens are left to
 * bprm_check_security. */
SEC("lsm/file_open")
int BPF_PROG(tyr_lsm_file_open, struct file *file, int ret)
{
	struct decide d = {};
	struct tyr_proc *proc;
	int is_doomed;
	if (ret)
		return ret;
	unsigned int fmode = BPF_CORE_READ(file, f_mode);
	if (!(fmode & (FMODE_READ | FMODE_WRITE)) || (fmode & FMODE_EXEC))
		return 0;
	struct tyr_config *cfg = begin(&d, &proc, &is_doomed);
	if (!cfg)
		return 0;
	if (is_doomed)
		return block_doomed(&d, cfg, 0);
	if (!proc && quiet(cfg, READ_WRITE))
		return 0;
	unsigned int oflags = BPF_CORE_READ(file, f_flags);
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *mnt = BPF_CORE_READ(file, f_path.mnt);
	decide_file(&d, proc, cfg, dentry, mnt, dentry_keys(dentry), fmode);
	return lsm_verdict(&d, proc, cfg, dentry, mnt, oflags, 0);
}

/* Execs: the binary about to run (bprm->file; for a script, first the script, then its
 * interpreter), decided with the identity the process will have after the exec, classified
 * as sched_process_exec will record it. */
SEC("lsm/bprm_check_security")
int BPF_PROG(tyr_lsm_bprm_check, struct linux_binprm *bprm, int ret)
{
	__u32 slot;
	if (ret)
		return ret;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg || cfg->nlayers == 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tyr_proc *cur = bpf_map_lookup_elem(&tyr_procs, &tgid);
	struct decide d = {.slot = slot, .nlayers = cfg->nlayers, .action = TYR_ACTION_EXEC};
	if (!cur && doomed(tgid))
		return block_doomed(&d, cfg, 0);
	struct file *exe = BPF_CORE_READ(bprm, file);
	struct dentry *dentry = BPF_CORE_READ(exe, f_path.dentry);
	struct vfsmount *mnt = BPF_CORE_READ(exe, f_path.mnt);
	build_path(&d.path, dentry, mnt);
	d.agent = cur && cur->agent_type_id ? cur->agent_type_id : exec_agent(&d.path);
	d.binary_mask = exec_binary_mask(cfg, &d.path);
	decide(&d, dentry, mnt);
	return lsm_verdict(&d, cur, cfg, dentry, mnt, 0, 0);
}

/* One name of a link or rename (the mount is the same for both names): fmode as the
 * tracepoint tier decides it at syscall entry. 0 or -EPERM. Global: verified once. */
__noinline int tyr_lsm_name(__u64 dentry_ptr, __u64 mnt_ptr, __u32 fmode, __u32 op)
{
	struct dentry *dentry = (struct dentry *)dentry_ptr;
	struct vfsmount *mnt = (struct vfsmount *)mnt_ptr;
	struct decide d = {};
	struct tyr_proc *proc;
	int is_doomed;
	struct tyr_config *cfg = begin(&d, &proc, &is_doomed);
	if (!cfg)
		return 0;
	if (is_doomed)
		return block_doomed(&d, cfg, op);
	if (!proc && quiet(cfg, READ_WRITE))
		return 0;
	decide_open(&d, dentry, mnt, fmode);
	return lsm_verdict(&d, proc, cfg, dentry, mnt, 0, op);
}

/* A trusted BTF pointer as a plain scalar (global functions take kernel pointers as
 * scalars; the verifier refuses to pass a typed pointer there). */
static __always_inline __u64 scalar_of(const void *p)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), &p);
	return v;
}

/* Hard links: a protected source keeps its only names; the new name is a write. */
SEC("lsm/path_link")
int BPF_PROG(tyr_lsm_path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, int ret)
{
	if (ret)
		return ret;
	__u64 mnt = (__u64)BPF_CORE_READ(new_dir, mnt);
	int r = tyr_lsm_name(scalar_of(old_dentry), mnt, FMODE_READ | FMODE_WRITE, TYR_EVENT_LINK);
	if (r)
		return r;
	return tyr_lsm_name(scalar_of(new_dentry), mnt, FMODE_WRITE,
			    TYR_EVENT_LINK | TYR_EVENT_TARGET);
}

/* Renames: as links; an exchange also moves the destination, a source too. */
SEC("lsm/path_rename")
int BPF_PROG(tyr_lsm_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	if (ret)
		return ret;
	__u64 mnt = (__u64)BPF_CORE_READ(old_dir, mnt);
	int r = tyr_lsm_name(scalar_of(old_dentry), mnt, FMODE_READ | FMODE_WRITE,
			     TYR_EVENT_RENAME);
	if (r)
		return r;
	__u32 fmode = FMODE_WRITE | ((flags & RENAME_EXCHANGE) ? FMODE_READ : 0);
	return tyr_lsm_name(scalar_of(new_dentry), mnt, fmode, TYR_EVENT_RENAME | TYR_EVENT_TARGET);
}

/* Connects of IPv4/IPv6 sockets (IPv4-mapped IPv6 as IPv4), decided as the cgroup connect
 * hooks do. Unconnected datagrams stay with cgroup sendmsg4/6, which already return EPERM. */
SEC("lsm/socket_connect")
int BPF_PROG(tyr_lsm_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen,
	     int ret)
{
	__u32 slot;
	if (ret)
		return ret;
	struct tyr_config *cfg = active_config(&slot);
	if (!cfg || cfg->nlayers == 0)
		return 0;
	__u16 family = BPF_CORE_READ(address, sa_family);
	struct decide d = {};
	if (family == AF_INET) {
		struct sockaddr_in sin = {};
		if (addrlen < (int)sizeof(sin) || bpf_probe_read_kernel(&sin, sizeof(sin), address))
			return 0;
		d.family = 4;
		__builtin_memcpy(d.addr, &sin.sin_addr.s_addr, 4);
		d.port = bpf_ntohs(sin.sin_port);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sin6 = {};
		/* The scope id is optional (and unused by the decision). */
		if (addrlen < SIN6_LEN_RFC2133 ||
		    bpf_probe_read_kernel(&sin6, SIN6_LEN_RFC2133, address))
			return 0;
		__u32 w[4];
		__builtin_memcpy(w, &sin6.sin6_addr, sizeof(w));
		d.port = bpf_ntohs(sin6.sin6_port);
		dest_ip6(&d, w[0], w[1], w[2], w[3]);
	} else {
		return 0;
	}
	struct tyr_proc *proc = decide_connect(&d, cfg, slot);
	if (d.verdict != TYR_VERDICT_DENY)
		return 0;
	struct tyr_event *ev = event_head(&d, proc, 0, TYR_ENFORCED_BLOCKED, cfg->generation);
	if (ev)
		event_send(ev, 0);
	return -EPERM;
}
