//! A minimal io_uring client over raw syscalls (no crate): opens a file with
//! `IORING_OP_OPENAT`, which no open tracepoint sees, then reads it with read(2).
//!
//! The kernel tests run it in a child: the test binary re-executes itself with
//! [`HELPER_ENV`] set and the filter [`HELPER_TEST`], whose test prints what it read.

use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the file the helper reads.
pub const HELPER_ENV: &str = "TYR_URING_READ";
/// The name of the helper test in each test binary.
pub const HELPER_TEST: &str = "io_uring_helper";

const SYS_IO_URING_SETUP: i64 = 425;
const SYS_IO_URING_ENTER: i64 = 426;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_OP_OPENAT: u8 = 18;
const IORING_ENTER_GETEVENTS: u32 = 1;
const AT_FDCWD: i32 = -100;
const PROT_RW: i32 = 0x1 | 0x2;
const MAP_SHARED_POPULATE: i32 = 0x01 | 0x8000;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

#[repr(C)]
#[derive(Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    open_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

unsafe extern "C" {
    fn syscall(num: i64, ...) -> i64;
    fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, off: i64)
    -> *mut c_void;
    fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
    fn close(fd: i32) -> i32;
}

fn map(len: usize, fd: i32, off: i64) -> Result<*mut u8, String> {
    // SAFETY: a fresh shared mapping of the ring fd; checked for MAP_FAILED.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            PROT_RW,
            MAP_SHARED_POPULATE,
            fd,
            off,
        )
    };
    if p as isize == -1 {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    Ok(p.cast())
}

/// # Safety
/// `base + off` must be a 4-byte aligned u32 inside a live ring mapping.
unsafe fn word(base: *mut u8, off: u32) -> &'static AtomicU32 {
    // SAFETY: per the contract above.
    unsafe { &*base.add(off as usize).cast::<AtomicU32>() }
}

/// Opens `path` through io_uring and returns its content (read with read(2)).
pub fn open_and_read(path: &str) -> Result<String, String> {
    let cpath = CString::new(path).map_err(|e| e.to_string())?;
    let mut p = Params::default();
    // SAFETY: io_uring_setup(entries, params) with a valid params struct.
    let ring = unsafe { syscall(SYS_IO_URING_SETUP, 4u32, &mut p as *mut Params) };
    if ring < 0 {
        return Err(format!(
            "io_uring_setup: {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = ring as i32;
    let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
    let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
    let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
    let sq = map(
        if single { sq_len.max(cq_len) } else { sq_len },
        fd,
        IORING_OFF_SQ_RING,
    )?;
    let cq = if single {
        sq
    } else {
        map(cq_len, fd, IORING_OFF_CQ_RING)?
    };
    let sqes = map(
        p.sq_entries as usize * size_of::<Sqe>(),
        fd,
        IORING_OFF_SQES,
    )?
    .cast::<Sqe>();
    let sqe = Sqe {
        opcode: IORING_OP_OPENAT,
        fd: AT_FDCWD,
        addr: cpath.as_ptr() as u64,
        user_data: 1,
        ..Sqe::default()
    };
    // SAFETY: the offsets come from the kernel for these mappings; index 0 < sq_entries.
    let res = unsafe {
        sqes.write(sqe);
        let tail = word(sq, p.sq_off.tail);
        let t = tail.load(Ordering::Acquire);
        let mask = word(sq, p.sq_off.ring_mask).load(Ordering::Relaxed);
        word(sq, p.sq_off.array + (t & mask) * 4).store(0, Ordering::Relaxed);
        tail.store(t.wrapping_add(1), Ordering::Release);
        let n = syscall(
            SYS_IO_URING_ENTER,
            fd,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            0usize,
            0usize,
        );
        if n < 0 {
            return Err(format!(
                "io_uring_enter: {}",
                std::io::Error::last_os_error()
            ));
        }
        let head = word(cq, p.cq_off.head);
        let h = head.load(Ordering::Acquire);
        if word(cq, p.cq_off.tail).load(Ordering::Acquire) == h {
            return Err("no completion".into());
        }
        let cmask = word(cq, p.cq_off.ring_mask).load(Ordering::Relaxed);
        let cqe = cq
            .add(p.cq_off.cqes as usize)
            .cast::<Cqe>()
            .add((h & cmask) as usize)
            .read();
        head.store(h.wrapping_add(1), Ordering::Release);
        cqe.res
    };
    if res < 0 {
        return Err(format!(
            "openat through io_uring: {}",
            std::io::Error::from_raw_os_error(-res)
        ));
    }
    let mut buf = [0u8; 256];
    // SAFETY: reading into a local buffer from the fd io_uring opened.
    let n = unsafe { read(res, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: closing fds this function opened.
    unsafe {
        close(res);
        close(fd);
    }
    let n = usize::try_from(n).map_err(|_| "read failed".to_owned())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The helper's body: reads the file named by [`HELPER_ENV`] (if set) and prints
/// `uring: CONTENT` or `uring-error: WHY`.
pub fn helper() {
    if let Ok(path) = std::env::var(HELPER_ENV) {
        match open_and_read(&path) {
            Ok(content) => println!("uring: {content}"),
            Err(e) => println!("uring-error: {e}"),
        }
    }
}

/// `sh -c "read _; exec THIS-TEST-BINARY <helper> …"` reading `path`: gated like the other
/// kernel tests, so the shell can be marked as an agent first.
pub fn gated_helper(path: &str) -> std::process::Command {
    let me = std::env::current_exe().expect("test binary");
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "read _; exec {} --exact {HELPER_TEST} --nocapture --test-threads=1",
            me.display()
        ))
        .env(HELPER_ENV, path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}
