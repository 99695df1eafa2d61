//! The server's memory from `/proc/<pid>/status` (Linux): the resident set now
//! (`VmRSS`) and its peak (`VmHWM`). Elsewhere every reading is `None`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One field of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The peak resident set so far.
pub fn peak_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM")
}

/// The resident set now.
pub fn current_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// Samples `VmRSS` every `interval` until told to stop.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<u64>>,
}

impl Sampler {
    pub fn start(pid: u32, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticks.tick() => match current_kb(pid) {
                        Some(kb) => samples.push(kb),
                        None => break,
                    },
                    _ = stopped.changed() => break,
                }
            }
            samples
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<u64> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_on_linux() {
        if cfg!(target_os = "linux") {
            let me = std::process::id();
            let (now, peak) = (current_kb(me).expect("VmRSS"), peak_kb(me).expect("VmHWM"));
            assert!(now > 0 && peak >= now, "{now} {peak}");
        }
        assert_eq!(current_kb(u32::MAX), None);
    }
}
