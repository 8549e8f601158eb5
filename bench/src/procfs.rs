//! Numbers about processes and the machine, read from /proc (Linux).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// User plus system CPU time of a process so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' do not.
    let (_, fields) = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let tick = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("{path}: too few fields"))?
            .parse()
            .with_context(|| format!("{path}: field {} is not a number", index + 3))
    };
    Ok(tick(11)? + tick(12)?)
}

/// Ticks of all cores together, busy and idle, since boot.
#[derive(Debug, Clone, Copy)]
pub struct MachineTicks {
    pub busy: u64,
    pub idle: u64,
}

/// The machine's CPU time from the first line of /proc/stat.
pub fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .context("/proc/stat: no cpu line")?;
    // user nice system idle iowait irq softirq steal; guest time is already in user.
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("/proc/stat: the cpu line is not numbers")?;
    if ticks.len() < 8 {
        bail!("/proc/stat: the cpu line has {} fields, not 8", ticks.len());
    }
    let idle = ticks[3] + ticks[4];
    Ok(MachineTicks {
        busy: ticks.iter().sum::<u64>() - idle,
        idle,
    })
}

/// A `Vm...:` line of /proc/<pid>/status, in KiB (e.g. `VmHWM`, the peak resident set).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path}: no {field}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("{path}: {field} is not a number"))
}

/// Clock ticks per second, which /proc/<pid>/stat counts in.
pub fn ticks_per_second() -> anyhow::Result<u64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    if !output.status.success() {
        bail!("getconf CLK_TCK failed");
    }
    let ticks: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")?;
    if ticks == 0 {
        bail!("getconf CLK_TCK printed 0");
    }
    Ok(ticks)
}

/// The process listening on TCP `port` on this machine (the broker), found by the inode
/// of its listening socket. Reading other processes' fds needs root or the same user;
/// without that the broker's CPU is simply not reported.
pub fn find_listener(port: u16) -> Option<u32> {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return None;
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    processes.flatten().find_map(|process| {
        let pid: u32 = process.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                sockets
                    .iter()
                    .any(|socket| target.as_os_str() == socket.as_str())
            })
        });
        owns.then_some(pid)
    })
}

/// `socket:[<inode>]` of every socket listening on `port`, as /proc/<pid>/fd shows them.
fn listening_sockets(port: u16) -> Vec<String> {
    let local_port = format!(":{port:04X}");
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok());
    let mut sockets = Vec::new();
    for table in tables {
        for line in table.lines().skip(1) {
            // Fields: sl, local address, remote address, state (0A = listening), ..., inode.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A")
                && fields
                    .get(1)
                    .is_some_and(|local| local.ends_with(&local_port));
            if let (true, Some(inode)) = (listening, fields.get(9)) {
                sockets.push(format!("socket:[{inode}]"));
            }
        }
    }
    sockets
}

/// The `model name` of the first CPU in /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Samples a process's resident set while a run goes on, keeping the largest.
pub struct RssSampler {
    stop: CancellationToken,
    task: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample_rss(pid, stop.clone()));
        RssSampler { stop, task }
    }

    /// The largest `VmRSS` seen, in KiB.
    pub async fn finish(self) -> anyhow::Result<u64> {
        self.stop.cancel();
        self.task.await.context("the RSS sampler panicked")
    }
}

async fn sample_rss(pid: u32, stop: CancellationToken) -> u64 {
    let mut peak = 0;
    let mut every = tokio::time::interval(RSS_SAMPLE_EVERY);
    loop {
        // A process that just exited has no status: its last sample stands.
        if let Ok(kib) = status_kib(pid, "VmRSS") {
            peak = peak.max(kib);
        }
        tokio::select! {
            () = stop.cancelled() => return peak,
            _ = every.tick() => {}
        }
    }
}
