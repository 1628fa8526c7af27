//! The standard `process_*` metrics (names as every Prometheus client library exports them), read
//! from Linux's `/proc/self` when `/metrics` is scraped. Elsewhere they stay 0. Reading /proc
//! ourselves costs four small file reads per scrape and no extra dependency.

use std::fs;

use prometheus::{Counter, Gauge, Registry};

/// Clock ticks per second of /proc's CPU times: USER_HZ, fixed at 100 in the Linux user ABI.
const USER_HZ: f64 = 100.0;

#[derive(Clone)]
pub(super) struct ProcessMetrics {
    cpu_seconds: Counter,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
    threads: Gauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl ProcessMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str| register(r, Gauge::new(name, help).expect("valid"));
        let p = ProcessMetrics {
            cpu_seconds: register(
                r,
                Counter::new(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                )
                .expect("valid"),
            ),
            resident_bytes: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_bytes: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ),
            threads: gauge("process_threads", "Number of OS threads in the process."),
        };
        p.refresh();
        p
    }

    /// Read /proc/self now. Missing files (not Linux) leave the values as they are.
    pub(super) fn refresh(&self) {
        if let Some(stat) = Stat::read() {
            let cpu = (stat.utime + stat.stime) as f64 / USER_HZ;
            // A counter only goes up: add what was spent since the last scrape.
            let delta = cpu - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.threads.set(stat.threads as f64);
            if let Some(boot) = boot_time() {
                self.start_time
                    .set(boot as f64 + stat.starttime as f64 / USER_HZ);
            }
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            if let Some(kb) = status_kb(&status, "VmRSS:") {
                self.resident_bytes.set(kb as f64 * 1024.0);
            }
            if let Some(kb) = status_kb(&status, "VmSize:") {
                self.virtual_bytes.set(kb as f64 * 1024.0);
            }
        }
        if let Ok(dir) = fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as f64);
        }
        if let Some(max) = fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l))
        {
            self.max_fds.set(max as f64);
        }
    }
}

/// The fields of /proc/self/stat used here.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// proc(5): the command name (field 2) is in parentheses and may contain spaces, so fields
    /// are counted after the last ')': field 3 (state) is index 0 there.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            starttime: field(22)?,
        })
    }
}

/// Boot time (Unix seconds) from /proc/stat's `btime` line.
fn boot_time() -> Option<u64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// A `Name:   1234 kB` line of /proc/self/status.
fn status_kb(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in /proc/self/limits.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parentheses_in_the_name() {
        let line = "4242 (mail guard (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    7 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                starttime: 123456
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn parses_status_and_limits() {
        let status = "Name:\tmailguard\nVmSize:\t  204800 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(51_200));
        assert_eq!(status_kb(status, "VmSize:"), Some(204_800));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
    }

    #[test]
    fn reads_this_process_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let r = Registry::new();
        let p = ProcessMetrics::register(&r);
        assert!(p.resident_bytes.get() > 0.0);
        assert!(p.open_fds.get() > 0.0);
        assert!(p.threads.get() >= 1.0);
        assert!(p.start_time.get() > 1.6e9);
    }
}
