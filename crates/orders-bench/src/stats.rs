//! Small measurements: process CPU and memory from /proc, medians, percentiles, the machine.

use serde::Serialize;

/// User + system CPU seconds of this process so far (`/proc/self/stat`, clock ticks of 1/100 s
/// as on every Linux this runs on); 0 where /proc is missing.
pub(crate) fn cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/self/stat")
}

/// User + system CPU seconds of the calling thread.
pub(crate) fn thread_cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/thread-self/stat")
}

fn proc_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at state = field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime is field 14, stime 15; `fields[0]` is field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every process whose command name is `comm` (e.g. `postgres`,
/// `tansu`), counting reaped children too (`cutime`, `cstime`), so that a database backend
/// that exits between two readings is not lost.
pub(crate) fn processes_cpu_seconds(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != comm {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14..=17; `fields[0]` is field 3.
        total += (11..=14)
            .filter_map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
            .sum::<f64>()
            / 100.0;
    }
    total
}

/// CPU seconds of the broker, the database and this process, for "who was busy" figures.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub(crate) struct CpuSplit {
    pub(crate) broker: f64,
    pub(crate) database: f64,
    pub(crate) this_process: f64,
}

impl CpuSplit {
    pub(crate) fn now() -> Self {
        Self {
            broker: processes_cpu_seconds("tansu"),
            database: processes_cpu_seconds("postgres"),
            this_process: cpu_seconds(),
        }
    }

    pub(crate) fn since(self, start: Self) -> Self {
        Self {
            broker: self.broker - start.broker,
            database: self.database - start.database,
            this_process: self.this_process - start.this_process,
        }
    }
}

/// Resident memory of this process in bytes (`VmRSS`).
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `q` quantile (0..=1) of sorted values.
pub(crate) fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) os: String,
    pub(crate) postgres: String,
    pub(crate) broker: String,
    pub(crate) profile: &'static str,
}

impl Machine {
    pub(crate) fn describe(postgres: String, broker: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib,
            os,
            postgres,
            broker,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
pub(crate) fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = run(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}
