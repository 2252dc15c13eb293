/* Structures shared between the BPF programs and tyrd (mirrored in src/kernel/maps.rs).
 *
 * The policy tables are the flat arrays of tyr_policy::compile::KernelTables, concatenated:
 * every (layer, action) table and the binaries DFA has a descriptor holding its offsets into
 * the shared arrays. The walk is the one of tyr_policy::compile::emulate. */
#ifndef TYR_MAPS_H
#define TYR_MAPS_H

/* Path scratch: paths are written backwards ending at TYR_PATH_MAX; a path of TYR_PATH_MAX
 * bytes or more fails closed. */
#define TYR_PATH_MAX 4096
#define TYR_SCRATCH_SIZE (2 * TYR_PATH_MAX)
/* Dentry components plus mount hops walked for one path. */
#define TYR_MAX_DEPTH 256
#define TYR_MAX_LAYERS 64
#define TYR_NUM_ACTIONS 5
#define TYR_MAX_CANDIDATES 256
/* Longest executable path the agent-executables table can hold. */
#define TYR_EXE_KEY_LEN 256

#define TYR_ACTION_FILE_READ 0
#define TYR_ACTION_FILE_WRITE 1
#define TYR_ACTION_EXEC 2
#define TYR_ACTION_NET_CONNECT 3

#define TYR_VERDICT_ALLOW 0
#define TYR_VERDICT_ALERT 1
#define TYR_VERDICT_DENY 2

#define TYR_ENFORCED_NONE 0
#define TYR_ENFORCED_BLOCKED 1
#define TYR_ENFORCED_KILLED 2

/* tyr_event.flags */
#define TYR_EVENT_FAIL_CLOSED 1
/* The path did not fit the event (it is empty). */
#define TYR_EVENT_NO_PATH 2
/* Decided at syscall entry from the path string the process passed (resolved against its
 * root, cwd or dirfd), before the kernel acts: an O_CREAT/O_TRUNC open, link or rename. */
#define TYR_EVENT_AT_ENTRY 4
/* The operation: a hard link (source or new name), a rename (source or destination), or
 * io_uring_setup (refused to governed processes: io_uring bypasses the syscall hooks). */
#define TYR_EVENT_LINK 8
#define TYR_EVENT_RENAME 16
#define TYR_EVENT_IO_URING 32
/* tyr_event.op: what a governed process tried on another process (tyr_event.target), which
 * only a process of the same identity may undergo: ptrace(PTRACE_ATTACH or PTRACE_SEIZE),
 * process_vm_readv, process_vm_writev, or an open of its memory or environment in /proc. */
#define TYR_OP_PTRACE 1
#define TYR_OP_VM_READ 2
#define TYR_OP_VM_WRITE 3
/* An open of /proc/PID/mem or /proc/PID/environ (also task/TID/...): read or write. */
#define TYR_OP_PROC_FILE 4
/* The destination (new name) of a link or rename, not its source. */
#define TYR_EVENT_TARGET 64
/* An allow event that opens a suppression window (tyr_allows): the same (process, path,
 * action) is not reported again for TYR_ALLOW_WINDOW_NS; the allows suppressed meanwhile are
 * counted in the entry, whose last_ns is this event's ts_ns. */
#define TYR_EVENT_WINDOW 128

/* tyr_proc.flags: the executable is an interpreter or loader (tyr_interps): the files it
 * opens for reading are also decided as exec (`sh script`, `ld.so ./prog`). */
#define TYR_PROC_INTERP 1

/* tyr_config.flags: allow events for every process, not only agents. */
#define TYR_CONFIG_ALLOW_EVENTS_ALL 1

/* tyr_counters indices (per-CPU u64). */
#define TYR_COUNTER_RINGBUF_DROPS 0
/* A child could not be recorded at fork (process map full): it is killed when governed. */
#define TYR_COUNTER_FORK_FULL 1
/* Walks that failed closed (path too long or deep, inconsistent tables). */
#define TYR_COUNTER_FAIL_CLOSED 2
/* Entry denies whose path string could not be overwritten (read-only memory): the process
 * is still killed, but the syscall may have run. */
#define TYR_COUNTER_UWRITE_FAILED 3
/* Suppressed allow events whose window could not be queued for tyrd's sweep (queue full):
 * their count is reported only if the process repeats the operation after the window. */
#define TYR_COUNTER_ALLOW_UNQUEUED 4
#define TYR_COUNTERS 5

/* Map sizes. */
#define TYR_PROCS_MAX 65536
#define TYR_CGROUPS_MAX 1024
#define TYR_EXES_MAX 1024
#define TYR_INTERPS_MAX 256
#define TYR_DOOMED_MAX 4096
/* The policy tables are double-buffered: slot s (0 or 1) uses tyr_config[s], the table
 * descriptors at s * TYR_TABLES_PER_SLOT, and the second half (s = 1) or first half (s = 0)
 * of every other table array. tyr_active[0] names the slot the programs read: userspace
 * fills the idle slot, flips it with one aligned 4-byte store, then waits for an RCU grace
 * period (tyr_barrier) so that no running program still reads the old slot. */
#define TYR_SLOTS 2
#define TYR_TABLES_PER_SLOT (TYR_MAX_LAYERS * TYR_NUM_ACTIONS)
#define TYR_TABLES_MAX (TYR_SLOTS * TYR_TABLES_PER_SLOT)
/* Per slot and agent type (0..255): the mask of layers that apply (bit 0, the base, always;
 * bit l for the overlays of that agent type), at slot * TYR_AGENTS + agent. */
#define TYR_AGENTS 256
#define TYR_AGENT_LAYERS_MAX (TYR_SLOTS * TYR_AGENTS)
#define TYR_CLASSES_MAX (256 * 256)
#define TYR_NEXT_MAX (1 << 21)
#define TYR_ACCEPT_MAX (1 << 18)
#define TYR_BIN_MASKS_MAX (1 << 16)
#define TYR_CANDS_MAX (1 << 18)
#define TYR_RULES_MAX (1 << 16)
#define TYR_PORTS_MAX (1 << 16)
#define TYR_LPM_MAX (1 << 16)
#define TYR_RINGBUF_SIZE (1 << 22)
#define TYR_ALLOWS_MAX 65536
#define TYR_ALLOW_QUEUE_MAX 16384
#define TYR_ALLOW_WINDOW_NS 1000000000ULL
/* The kernel ends a window this much earlier than tyrd's sweep does, so that it never counts
 * into a window the sweep has already ended. */
#define TYR_ALLOW_WINDOW_MARGIN_NS 50000000ULL
/* The longest jiffy of a supported kernel (CONFIG_HZ >= 100). */
#define TYR_MAX_JIFFY_NS 10000000ULL

/* tgid → identity; set at exec (classifier, cgroup, binaries DFA), copied at fork. */
struct tyr_proc {
	__u64 discovered_id;
	__u64 binary_mask;
	__u8 agent_type_id;
	__u8 flags;
	__u16 _pad0;
	__u32 _pad1;
};
_Static_assert(sizeof(struct tyr_proc) == 24, "tyr_proc layout");

/* One byte-class DFA: classes[class_off + byte], next[next_off + state * nclasses + class],
 * per-state data at accept_off + state (tyr_accept, or tyr_bin_masks for the binaries DFA). */
struct tyr_dfa {
	__u32 class_off;
	__u32 next_off;
	__u32 accept_off;
	__u32 nclasses;
	__u32 start;
	__u32 dead;
	__u32 nstates;
	__u32 _pad;
};
_Static_assert(sizeof(struct tyr_dfa) == 32, "tyr_dfa layout");

/* One (layer, action) table at index layer * TYR_NUM_ACTIONS + action. */
struct tyr_table {
	struct tyr_dfa dfa;
	__u32 rule_off;
	__u32 nrules;
	__u32 cand_off;
	__u32 any_off;
	__u16 any_len;
	__u8 deflt;
	__u8 has_dfa;
	/* Length of this table's candidate array. */
	__u32 ncands;
};
_Static_assert(sizeof(struct tyr_table) == 56, "tyr_table layout");

/* Candidates of one DFA state: cands[table.cand_off + off .. + len]. */
struct tyr_accept {
	__u32 off;
	__u16 len;
	__u16 _pad;
};
_Static_assert(sizeof(struct tyr_accept) == 8, "tyr_accept layout");

/* One kernel-enforced rule (tyr_policy RuleMeta). */
struct tyr_rule {
	__u64 binary_req;
	__u64 agent_mask;
	__u64 domain_req;
	__u32 rule;
	/* Port ranges: tyr_ports[port_off .. port_off + port_len]; 0 = any port. */
	__u32 port_off;
	__u32 port_len;
	__u8 verdict;
	__u8 _pad[3];
};
_Static_assert(sizeof(struct tyr_rule) == 40, "tyr_rule layout");

/* Inclusive port range of a net_connect rule. */
struct tyr_port_range {
	__u16 start;
	__u16 end;
};
_Static_assert(sizeof(struct tyr_port_range) == 4, "tyr_port_range layout");

/* Destination LPM trie key: (slot, layer, family) then the address, so that one trie holds
 * every (slot, layer) table; prefixlen = 24 + the CIDR prefix length. IPv4 uses addr[0..4]. */
struct tyr_lpm_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 layer;
	__u8 family;
	__u8 addr[16];
	__u8 _pad;
};
_Static_assert(sizeof(struct tyr_lpm_key) == 24, "tyr_lpm_key layout");

/* Candidates of one prefix: the table's cands[off .. off + len]. */
struct tyr_lpm_val {
	__u32 off;
	__u16 len;
	__u16 _pad;
};
_Static_assert(sizeof(struct tyr_lpm_val) == 8, "tyr_lpm_val layout");

/* One slot of tyr_config. nlayers == 0: no tables loaded (nothing is decided). */
struct tyr_config {
	__u32 nlayers;
	__u32 flags;
	__u64 generation;
	struct tyr_dfa binaries;
	__u8 has_binaries;
	/* Bit a: the base layer's table for action a has no rules and allows by default, so a
	 * process without identity needs no decision for a (the fast path). */
	__u8 base_quiet;
	__u16 _pad;
	/* Different for every table load (tyrd counts it up, skipping 0): verdict-cache entries
	 * of another epoch are stale. */
	__u32 epoch;
	__u8 layer_agent[TYR_MAX_LAYERS];
};
_Static_assert(sizeof(struct tyr_config) == 120, "tyr_config layout");

/* Verdict cache of file opens (tyr_vcache, LRU): the decision of an open, keyed by the
 * opened path's identity and everything else the decision depends on. The path identity is
 * the (mount, dentry) pair plus the dentry's parent, name hash/length and inode, so that a
 * reused dentry address only matches when all of them coincide; never the inode alone (a hard
 * link gives a protected inode an allowed name). Renames and mount changes anywhere bump
 * tyr_nsgen (at syscall entry and exit): an entry is used only while the namespace generation
 * read before its decision was computed is still current, and only for the table epoch it was
 * computed with. Fail-closed decisions are never cached. */
#define TYR_VCACHE_MAX 65536
struct tyr_vkey {
	__u64 mnt;
	__u64 dentry;
	__u64 parent;
	__u64 name_hash_len;
	__u64 inode;
	__u64 binary_mask;
	__u8 agent;
	/* FMODE_READ | FMODE_WRITE of the open. */
	__u8 fmode;
	/* TYR_PROC_INTERP of the caller (its reads are also decided as exec). */
	__u8 interp;
	__u8 _pad[5];
};
_Static_assert(sizeof(struct tyr_vkey) == 56, "tyr_vkey layout");

struct tyr_vval {
	__u64 nsgen;
	__u32 epoch;
	__u32 layer;
	__u32 rule;
	__u8 action;
	__u8 verdict;
	__u8 _pad[2];
};
_Static_assert(sizeof(struct tyr_vval) == 24, "tyr_vval layout");

/* Entry-time allow cache (tyr_ecache, LRU): the ALLOW decisions of governed opens at syscall
 * entry (the kill-only decision; the exit decision on the opened file stays authoritative),
 * keyed by a 64-bit hash of the raw user string with its length, the base directory of a
 * relative string (the cwd; strings relative to another dirfd are not cached), the root and
 * the caller's identity and mode. Entries are used under the same rules as tyr_vcache's (table
 * epoch and namespace generation read before deciding). A hash collision can only skip the
 * entry-time kill of an open: the exit decision still denies it, so 64 bits suffice. */
#define TYR_ECACHE_MAX 16384
struct tyr_ekey {
	__u64 hash;
	__u64 base_dentry;
	__u64 base_mnt;
	__u64 root_dentry;
	__u64 root_mnt;
	__u64 binary_mask;
	__u32 len;
	__u8 agent;
	__u8 fmode;
	__u8 interp;
	__u8 _pad;
};
_Static_assert(sizeof(struct tyr_ekey) == 56, "tyr_ekey layout");

struct tyr_eval {
	__u64 nsgen;
	__u32 epoch;
	__u32 _pad;
};
_Static_assert(sizeof(struct tyr_eval) == 16, "tyr_eval layout");

/* Allow-event suppression (tyr_allows, LRU): one entry per (process, path identity, caller
 * identity, mode, table epoch) whose allow event was sent at last_ns. Repeats within
 * TYR_ALLOW_WINDOW_NS are counted in pending (the first one also queues the key in
 * tyr_allow_queue); the next event sent for the key carries them in its count, and tyrd sweeps
 * the windows that ended with allows still pending (see src/kernel/allows.rs). An entry also
 * stands for its allow decision: while the namespace generation is the one it was decided
 * under, a repeat is counted without deciding again. */
struct tyr_akey {
	__u64 mnt;
	__u64 dentry;
	__u64 parent;
	__u64 name_hash_len;
	__u64 inode;
	__u64 binary_mask;
	__u32 tgid;
	__u32 epoch;
	__u8 agent;
	/* FMODE_READ | FMODE_WRITE of an open, or TYR_AKEY_EXEC. */
	__u8 mode;
	/* TYR_PROC_INTERP of the caller. */
	__u8 interp;
	__u8 _pad[5];
};
_Static_assert(sizeof(struct tyr_akey) == 64, "tyr_akey layout");

/* tyr_akey.mode of an exec (no open has it). */
#define TYR_AKEY_EXEC 4
/* tyr_akey.mode of a connect (or datagram): parent and name_hash_len hold the destination
 * address (16 bytes, IPv4 in the first 4), inode the family << 16 | port, mnt and dentry 1. */
#define TYR_AKEY_CONNECT 8

struct tyr_aval {
	__u64 last_ns;
	__u64 pending;
	/* A jiffies count before which the window is surely still open (at most a
	 * TYR_MAX_JIFFY_NS per jiffy), so that most repeats need no clock read. */
	__u64 open_until_jiffies;
	/* The namespace generation the allow was decided under. */
	__u64 nsgen;
};
_Static_assert(sizeof(struct tyr_aval) == 32, "tyr_aval layout");

/* Entry-time path resolution: the joined input (base directory, '/', the user string) and
 * the output offset of every component kept (to pop on ".."). */
struct tyr_upath {
	char in[TYR_SCRATCH_SIZE];
	__u16 stack[TYR_MAX_DEPTH];
	/* Where the user string (without its NUL) was read into `in` by the last resolution. */
	__u32 str_off;
	__u32 str_len;
};

/* Key of the agent-executables table: the NUL-padded absolute path. */
struct tyr_exe_key {
	char path[TYR_EXE_KEY_LEN];
};
_Static_assert(sizeof(struct tyr_exe_key) == 256, "tyr_exe_key layout");

/* Ring-buffer record: the header, then path_len bytes of path (records are cut after the
 * path). rule == 0xffffffff: a default decided. */
struct tyr_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u64 discovered_id;
	__u64 generation;
	__u32 pid;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 rule;
	__u32 layer;
	__u32 open_flags;
	__u16 path_len;
	__u8 action;
	__u8 verdict;
	__u8 enforced;
	__u8 agent_type_id;
	__u8 flags;
	/* TYR_OP_*: an access to another process (then target is its pid), else 0. */
	__u8 op;
	__u32 target;
	/* net_connect: destination (family 4 or 6, IPv4 in addr[0..4]) and port. */
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 _pad2[5];
	char comm[16];
	/* The decisions this event stands for: 1, plus the allows suppressed before it. */
	__u32 count;
	__u32 _pad3;
	char path[TYR_PATH_MAX];
};
_Static_assert(sizeof(struct tyr_event) == 4216, "tyr_event layout");
#define TYR_EVENT_HEADER 120
_Static_assert(__builtin_offsetof(struct tyr_event, path) == TYR_EVENT_HEADER, "tyr_event header");

#endif
