//! What Linux's `/proc` says about a running process, for the instruments that measure the
//! service beside their own load: CPU time, resident memory and open files. Reads only; never
//! signals or changes a process.

use std::path::PathBuf;

use anyhow::Context as _;

/// The process to read: this one, or another by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    Own,
    Of(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::Own => PathBuf::from("/proc/self"),
            Pid::Of(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }
}

/// `/proc/PID/stat`'s times are in clock ticks of 1/100 s on Linux, whatever the kernel's HZ.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name, which may hold spaces and ends
/// with the last `)`; the first of them is the state (field 3 of proc(5)).
fn stat_fields(pid: Pid) -> anyhow::Result<Vec<u64>> {
    let path = pid.dir().join("stat");
    let stat =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{} without a command name", path.display()))?;
    // The state is a letter; every later field used here is a number.
    Ok(after_name
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse::<u64>().unwrap_or(0))
        .collect())
}

/// Field `n` of proc(5) (1-based, `n` ≥ 4) among [`stat_fields`].
fn field(fields: &[u64], n: usize) -> anyhow::Result<u64> {
    fields
        .get(n - 4)
        .copied()
        .with_context(|| format!("/proc/PID/stat has no field {n}"))
}

/// The CPU time (user and system, seconds) the process has used.
pub fn cpu_seconds(pid: Pid) -> anyhow::Result<f64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15.
    Ok((field(&fields, 14)? + field(&fields, 15)?) as f64 / TICKS_PER_SECOND)
}

/// The CPU time of a process and every child it has: its own, what its children that ended
/// used (cutime and cstime, fields 16 and 17), and what its running children have used so
/// far. PostgreSQL's backends are the postmaster's children, so this is the whole server's.
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let fields = stat_fields(Pid::Of(pid))?;
    let mut ticks = field(&fields, 14)? + field(&fields, 15)? + field(&fields, 16)?;
    ticks += field(&fields, 17)?;
    let mut seconds = ticks as f64 / TICKS_PER_SECOND;
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(child) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: it is simply not counted.
        let Ok(fields) = stat_fields(Pid::Of(child)) else {
            continue;
        };
        // ppid is field 4.
        if field(&fields, 4).ok() == Some(u64::from(pid)) {
            seconds += cpu_seconds(Pid::Of(child)).unwrap_or(0.0);
        }
    }
    Ok(seconds)
}

/// The resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: Pid) -> anyhow::Result<u64> {
    let path = pid.dir().join("status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{} has no VmRSS line", path.display()))
}

/// The CPU time every core of the machine has spent busy (seconds, all processes and the
/// kernel): the first line of `/proc/stat` without its idle and iowait columns.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let columns: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("/proc/stat without its cpu line")?
        .split_whitespace()
        .map(|column| column.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is already in user and nice.
    let busy: u64 = columns.iter().take(8).sum::<u64>()
        - columns.get(3).copied().unwrap_or(0)
        - columns.get(4).copied().unwrap_or(0);
    Ok(busy as f64 / TICKS_PER_SECOND)
}

/// The number of open file descriptors (entries of `/proc/PID/fd`).
pub fn open_files(pid: Pid) -> anyhow::Result<u64> {
    let path = pid.dir().join("fd");
    let entries =
        std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?;
    Ok(entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_with_only_its_standard_streams_has_three_open_files() {
        use std::io::Read as _;
        use std::process::{Command, Stdio};
        // The child closes whatever it inherited beyond its standard streams, then says so.
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import os, sys, time; os.closerange(3, 1 << 16); print(flush=True); time.sleep(30)",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = [0_u8; 1];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .unwrap();
        let pid = Pid::Of(child.id());
        let files = open_files(pid);
        let rss = rss_kib(pid);
        let cpu = cpu_seconds(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(files.unwrap(), 3);
        assert!(rss.unwrap() > 0);
        assert!(cpu.unwrap() < 1.0);
    }

    #[test]
    fn this_process_is_read_by_its_own_id_and_as_self() {
        assert!(rss_kib(Pid::Own).unwrap() > 0);
        assert!(rss_kib(Pid::Of(std::process::id())).unwrap() > 0);
        assert!(open_files(Pid::Own).unwrap() >= 3);
        let spent = cpu_seconds(Pid::Own).unwrap();
        let machine = machine_busy_seconds().unwrap();
        let mut x = 0_u64;
        while cpu_seconds(Pid::Own).unwrap() < spent + 0.1 {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(tree_cpu_seconds(std::process::id()).unwrap() >= spent + 0.1);
        // The machine's busy time includes this process's own 0.1 s (ticks of 0.01 s).
        assert!(machine_busy_seconds().unwrap() >= machine + 0.09);
    }

    #[test]
    fn a_process_that_does_not_exist_is_an_error_naming_its_file() {
        let e = rss_kib(Pid::Of(u32::MAX)).unwrap_err();
        assert!(
            format!("{e:#}").contains("/proc/4294967295/status"),
            "{e:#}"
        );
    }
}
