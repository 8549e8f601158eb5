//! CPU time: this process's from getrusage, the broker's from /proc, its process found as
//! the owner of the socket listening on the AMQP port.

use std::time::Duration;

/// This process's CPU time, user and system.
pub fn process_cpu() -> std::io::Result<Duration> {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(time: libc::timeval) -> Duration {
    Duration::from_secs(time.tv_sec.unsigned_abs())
        + Duration::from_micros(time.tv_usec.unsigned_abs())
}

/// The broker's process, found as the owner of the socket listening on the AMQP port.
pub struct Broker {
    pub pid: u32,
    ticks_per_second: f64,
}

impl Broker {
    pub fn find(port: u16) -> Option<Self> {
        let inodes = listening_inodes(port);
        let pid = socket_owner(&inodes)?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Some(Self {
            pid,
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        })
    }

    /// Its CPU time, user and system, from /proc/<pid>/stat.
    pub fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The fields after the command name, which may hold spaces, start at the state (3rd):
        // utime and stime are the 14th and 15th.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_secs_f64(
            (utime + stime) as f64 / self.ticks_per_second,
        ))
    }
}

/// The inodes of the TCP sockets (v4 and v6) listening on `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// The process that holds one of `sockets` (as `socket:[inode]`) open.
fn socket_owner(sockets: &[String]) -> Option<u32> {
    if sockets.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|process| {
            let pid: u32 = process.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| {
                    sockets
                        .iter()
                        .any(|socket| target.as_os_str() == socket.as_str())
                })
                .then_some(pid)
        })
}
