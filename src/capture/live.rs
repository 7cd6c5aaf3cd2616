//! Live capture: one libpcap handle per worker, joined in a Linux `PACKET_FANOUT` group.
//!
//! The kernel hashes each packet's flow symmetrically (`PACKET_FANOUT_HASH` uses
//! `__skb_get_hash_symmetric`) and delivers it to one handle of the group, so both
//! directions of a connection reach the same worker without any user-space dispatch.
//! `PACKET_FANOUT_FLAG_DEFRAG` makes the kernel reassemble IP fragments before hashing, so
//! a datagram's fragments cannot be split over workers.
//!
//! This is the one module that needs `unsafe`: `setsockopt` on libpcap's socket for the
//! fanout, and the `setgid`/`setuid` calls that drop root after the handles are open.

use crate::config::CaptureConfig;
use crate::decode::LinkType;
use std::io;

/// Errors opening live capture. Each names the interface or filter and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// `capture.interface` is empty.
    #[error("capture.interface is not set: name the mirror/TAP interface to capture from")]
    NoInterface,
    /// The interface does not exist.
    #[error("capture.interface {iface:?}: no such interface (available: {available})")]
    NoSuchInterface {
        /// The configured name.
        iface: String,
        /// Interfaces that do exist.
        available: String,
    },
    /// Not allowed to capture.
    #[error("capture.interface {iface:?}: permission denied: outflow needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode and fanout); run as root or grant them ({message})")]
    Permission {
        /// The interface.
        iface: String,
        /// libpcap's message.
        message: String,
    },
    /// Any other failure to open or configure the handle.
    #[error("capture.interface {iface:?}: cannot capture: {message}")]
    Open {
        /// The interface.
        iface: String,
        /// libpcap's message.
        message: String,
    },
    /// The BPF filter does not compile.
    #[error("capture.filter {filter:?}: invalid filter: {message}")]
    Filter {
        /// The filter text.
        filter: String,
        /// libpcap's message.
        message: String,
    },
    /// Dropping privileges failed.
    #[error("run.user {user:?}: {message}")]
    User {
        /// The user.
        user: String,
        /// What failed.
        message: String,
    },
}

/// An open live capture handle.
pub struct Handle {
    /// The libpcap capture.
    pub cap: pcap::Capture<pcap::Active>,
    /// Its link type.
    pub link: LinkType,
    /// Longest wait in [`Handle::wait`], ms.
    timeout_ms: i32,
    /// libpcap's counters are u32 and wrap after 4 G packets; this accumulates them.
    last: [u32; 3],
    totals: [u64; 3],
}

fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens one capture handle as configured (promiscuous, snaplen, buffer, timeout, filter).
pub fn open(cfg: &CaptureConfig) -> Result<Handle, LiveError> {
    let iface = cfg.interface.as_str();
    if iface.is_empty() {
        return Err(LiveError::NoInterface);
    }
    let known = interfaces();
    if !known.is_empty() && !known.iter().any(|i| i == iface) {
        return Err(LiveError::NoSuchInterface {
            iface: iface.into(),
            available: known.join(", "),
        });
    }
    let open_err = |e: pcap::Error| {
        let message = e.to_string();
        let lower = message.to_lowercase();
        if lower.contains("permission") || lower.contains("not permitted") {
            LiveError::Permission {
                iface: iface.into(),
                message,
            }
        } else if lower.contains("no such device") {
            LiveError::NoSuchInterface {
                iface: iface.into(),
                available: known.join(", "),
            }
        } else {
            LiveError::Open {
                iface: iface.into(),
                message,
            }
        }
    };
    let timeout_ms = i32::try_from(cfg.read_timeout.as_millis())
        .unwrap_or(1000)
        .max(1);
    let mut cap = pcap::Capture::from_device(iface)
        .map_err(open_err)?
        .promisc(cfg.promiscuous)
        .snaplen(i32::try_from(cfg.snaplen).unwrap_or(65535))
        .buffer_size(i32::try_from(cfg.buffer_bytes).unwrap_or(i32::MAX))
        .timeout(timeout_ms)
        .immediate_mode(cfg.immediate)
        .precision(pcap::Precision::Nano)
        .open()
        .map_err(open_err)?;
    if !cfg.filter.is_empty() {
        cap.filter(&cfg.filter, true)
            .map_err(|e| LiveError::Filter {
                filter: cfg.filter.clone(),
                message: e.to_string(),
            })?;
    }
    // Non-blocking reads plus our own poll(): libpcap's read timeout on Linux (TPACKET_V3)
    // does not fire while no packet at all arrives, and a worker must wake up on a quiet
    // link to expire flows and to notice a shutdown request.
    let cap = cap.setnonblock().map_err(open_err)?;
    let link = LinkType::from_dlt(cap.get_datalink().0);
    Ok(Handle {
        cap,
        link,
        timeout_ms,
        last: [0; 3],
        totals: [0; 3],
    })
}

impl Handle {
    /// Waits until a packet may be readable or the read timeout passes.
    #[allow(unsafe_code)]
    pub fn wait(&self) {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack, count 1; the fd belongs to the open
        // handle. An EINTR (signal) simply returns early, which is what we want.
        unsafe {
            libc::poll(&mut pfd, 1, self.timeout_ms);
        }
    }
}

// From linux/if_packet.h (stable kernel ABI since 3.1 / 3.10 for the flag).
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_HASH: libc::c_int = 0;
const PACKET_FANOUT_FLAG_DEFRAG: libc::c_int = 0x8000;

/// Joins the handle's socket to fanout group `group` in symmetric-hash mode.
#[allow(unsafe_code)]
pub fn join_fanout(h: &Handle, group: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = h.cap.as_raw_fd();
    let arg: libc::c_int =
        libc::c_int::from(group) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16);
    // SAFETY: `fd` is the open packet socket owned by the live pcap handle `h`, which
    // outlives this call; `arg` is a c_int on our stack and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_FANOUT,
            (&arg as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kernel counters of a handle since it opened: (received, dropped for lack of buffer,
/// dropped by the interface). libpcap reports them as u32, which a sensor running for months
/// overflows, so the deltas are accumulated in u64 (read at least once per wrap: every
/// second in practice). `None` if the platform cannot tell.
pub fn kernel_stats(h: &mut Handle) -> Option<(u64, u64, u64)> {
    let s = h.cap.stats().ok()?;
    accumulate(
        &mut h.last,
        &mut h.totals,
        [s.received, s.dropped, s.if_dropped],
    );
    Some((h.totals[0], h.totals[1], h.totals[2]))
}

/// Adds the u32 deltas since `last` (wrapping) to `totals`.
fn accumulate(last: &mut [u32; 3], totals: &mut [u64; 3], now: [u32; 3]) {
    for ((t, l), n) in totals.iter_mut().zip(last.iter_mut()).zip(now) {
        *t += u64::from(n.wrapping_sub(*l));
        *l = n;
    }
}

/// Switches the process to `user` (its uid, primary gid, no supplementary groups), with a
/// bounding set of [`CAPTURE_CAPS`] and `PR_SET_NO_NEW_PRIVS`. Called after every capture
/// handle is open: capture needs privileges, parsing must not have them.
#[allow(unsafe_code)]
pub fn drop_privileges(user: &str) -> Result<(), LiveError> {
    let fail = |message: String| LiveError::User {
        user: user.into(),
        message,
    };
    let name = std::ffi::CString::new(user).map_err(|_| fail("contains a NUL byte".into()))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local (`name`, `pwd`, `buf` with its true
    // length, `result`); getpwnam_r writes only within them.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(fail("no such user".into()));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    // The bounding set keeps only what capture needs, so nothing this process ever runs can
    // hold another capability (dropping needs CAP_SETPCAP: before setuid). Capabilities
    // unknown to the running kernel give EINVAL: nothing to drop.
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    for cap in (0..=last_cap).filter(|c| !CAPTURE_CAPS.contains(c)) {
        // Already out of the set (a container or unit that narrowed it): nothing to drop,
        // and dropping would need CAP_SETPCAP, which such a process may rightly lack.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        let e = io::Error::last_os_error();
        if rc != 0 && e.raw_os_error() != Some(libc::EINVAL) {
            return Err(fail(format!(
                "dropping capability {cap} from the bounding set: {e}"
            )));
        }
    }
    // SAFETY: plain syscalls on integers; setgroups gets a null list of length 0.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail(format!("setgroups: {}", io::Error::last_os_error())));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail(format!(
                "setgid({gid}): {}",
                io::Error::last_os_error()
            )));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail(format!(
                "setuid({uid}): {}",
                io::Error::last_os_error()
            )));
        }
        // Regaining root must now be impossible.
        if uid != 0 && libc::setuid(0) == 0 {
            return Err(fail("could regain root after setuid".into()));
        }
        // Nor may anything executed later gain privileges (setuid binaries, file
        // capabilities). This and the bounding set are per thread: threads started after
        // this inherit them; the one started before (the log writer) keeps the full
        // bounding set, but it only writes log lines and never executes anything.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(fail(format!(
                "PR_SET_NO_NEW_PRIVS: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// The capabilities live capture uses: CAP_NET_ADMIN (12, promiscuous mode and
/// `PACKET_FANOUT`) and CAP_NET_RAW (13, packet sockets). The bounding set keeps these two
/// after [`drop_privileges`], as the systemd unit's `CapabilityBoundingSet` does.
pub const CAPTURE_CAPS: [libc::c_ulong; 2] = [12, 13];

/// The user this process runs as now (after [`drop_privileges`], the `run.user`): its
/// name and uid, as "outflow (uid 998)", or "uid 998" when it has no passwd entry. For
/// messages about files the process cannot read.
#[allow(unsafe_code)]
pub fn effective_user() -> String {
    // SAFETY: geteuid cannot fail and takes no pointers.
    let uid = unsafe { libc::geteuid() };
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local (`pwd`, `buf` with its true length,
    // `result`); getpwuid_r writes only within them.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`, alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    format!("{} (uid {uid})", name.to_string_lossy())
}

#[allow(unsafe_code)]
fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: libc::passwd is a plain C struct of integers and pointers, for which all-zero
    // (null pointers) is a valid value; getpwnam_r fills it in.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_counters_survive_u32_wrap() {
        let (mut last, mut totals) = ([0u32; 3], [0u64; 3]);
        super::accumulate(&mut last, &mut totals, [u32::MAX - 5, 10, 0]);
        super::accumulate(&mut last, &mut totals, [4, 12, 0]);
        assert_eq!(totals, [u64::from(u32::MAX) + 5, 12, 0]);
    }

    #[test]
    fn effective_user_names_the_uid() {
        let me = super::effective_user();
        // The effective uid as the kernel reports it (the third field of "Uid:").
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(euid) = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
        {
            assert!(me.contains(&format!("uid {euid}")), "{me}");
        }
    }
}
