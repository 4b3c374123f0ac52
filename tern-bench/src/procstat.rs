//! The broker's CPU time and resident memory, read from `/proc/PID` (Linux).

use anyhow::Context;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on every
/// mainstream Linux configuration).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

pub fn read(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the broker's pid right?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse(&stat, &status)
}

/// `stat`'s utime and stime (fields 14 and 15, counted after the parenthesised command name,
/// which may hold spaces) and `status`'s VmRSS.
fn parse(stat: &str, status: &str) -> anyhow::Result<Usage> {
    let after_name = stat.rsplit_once(')').context("no command name in stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is the first after the name: utime is field 14, index 11 here.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    let cpu_seconds = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS in status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(Usage {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_are_read_even_with_spaces_in_the_name() {
        let stat = "4242 (tern worker) S 1 4242 4242 0 -1 4194560 1530 0 0 0 250 50 0 0 20 0 3 0";
        let status = "Name:\ttern\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        let usage = parse(stat, status).unwrap();
        assert_eq!(usage.cpu_seconds, 3.0);
        assert_eq!(usage.rss_bytes, 12345 * 1024);
    }

    #[test]
    fn this_process_can_be_read() {
        let usage = read(std::process::id()).unwrap();
        assert!(usage.rss_bytes > 0);
    }
}
