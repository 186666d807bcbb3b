//! # trident-loadgen
//!
//! Offered load for benchmarks of the gateway and its peers (InfluxDB
//! itself, vmagent): the same Telegraf-like corpus, cut into request bodies
//! of `batch` lines, sent by `connections` concurrent senders until `lines`
//! are sent, to any InfluxDB-compatible `/write` URL.
//!
//! ```text
//! telegraf_corpus ──split into batches──► N senders ──POST──► target /write
//!                                             │
//!                     latencies, statuses ◄───┘   the target's CPU clock and
//!                                 │               /proc/<pid>/task/*/stat before/after
//!                                 └──► Report: lines/s, p50/p99, CPU µs per line,
//!                                              CPU by thread name
//! ```
//!
//! A load generator, not a test: it measures and reports, it asserts nothing
//! about speed.

use std::time::{Duration, Instant};

use trident_line_protocol::test_helpers::telegraf_corpus_from;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target's CPU counters could not be read.
    #[error("cannot read /proc/{pid}/stat (is the target's pid right?): {source}")]
    ProcStat {
        /// The pid.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// `/proc/<pid>/stat` did not have the expected fields.
    #[error("unexpected /proc/{0}/stat format")]
    ProcFormat(u32),
    /// A sender task failed to run.
    #[error("a sender task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How to load the target.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Full write URL with its query, e.g. `http://127.0.0.1:8086/write?db=bench`.
    pub url: String,
    /// Lines to send in all.
    pub lines: usize,
    /// Lines per request.
    pub batch: usize,
    /// Concurrent senders.
    pub connections: usize,
    /// Seed of the corpus (same seed, same bytes).
    pub seed: u64,
    /// Where the corpus's timestamps start; `None`: the fixed start
    /// ([`trident_line_protocol::test_helpers::CORPUS_START_NS`]).
    pub start_ns: Option<i64>,
    /// Pids whose CPU time (user + system) is charged to the run.
    pub target_pids: Vec<u32>,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Lines in requests answered 2xx.
    pub lines_ok: usize,
    /// Requests answered 2xx.
    pub requests_ok: usize,
    /// Requests answered otherwise, or failed, by status (0 = no answer).
    pub failures: Vec<(u16, usize)>,
    /// Bytes sent.
    pub bytes: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Request latency percentiles.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// CPU time the target pids used during the run.
    pub target_cpu: Option<Duration>,
    /// The same by thread name (threads of one name summed, the most
    /// first): where a target spends it, e.g. its async runtime against
    /// its Kafka client's threads. Threads that ended during the run are
    /// missing here but counted in `target_cpu`.
    pub target_threads: Vec<(String, Duration)>,
}

impl Report {
    /// Accepted lines per second.
    pub fn lines_per_second(&self) -> f64 {
        self.lines_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Target CPU per accepted line, in microseconds.
    pub fn cpu_us_per_line(&self) -> Option<f64> {
        self.target_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.lines_ok.max(1) as f64)
    }

    /// The report as JSON, for scripts and docs.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lines_ok": self.lines_ok,
            "requests_ok": self.requests_ok,
            "failures": self.failures.iter().map(|(s, n)| serde_json::json!({"status": s, "count": n})).collect::<Vec<_>>(),
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "lines_per_s": self.lines_per_second(),
            "p50_ms": self.p50.as_secs_f64() * 1e3,
            "p99_ms": self.p99.as_secs_f64() * 1e3,
            "target_cpu_s": self.target_cpu.map(|c| c.as_secs_f64()),
            "target_cpu_us_per_line": self.cpu_us_per_line(),
            "target_threads_cpu_s": self
                .target_threads
                .iter()
                .map(|(name, cpu)| (name.clone(), serde_json::json!(cpu.as_secs_f64())))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The request bodies of a plan: the corpus (stamped from `start_ns`) cut
/// at line boundaries.
pub fn bodies(lines: usize, batch: usize, seed: u64, start_ns: i64) -> Vec<Vec<u8>> {
    let corpus = telegraf_corpus_from(lines, seed, start_ns);
    let batch = batch.max(1);
    let mut out = Vec::with_capacity(lines / batch + 1);
    let mut start = 0;
    let mut count = 0;
    for (i, &b) in corpus.iter().enumerate() {
        if b == b'\n' {
            count += 1;
            if count == batch {
                out.push(corpus[start..=i].to_vec());
                start = i + 1;
                count = 0;
            }
        }
    }
    if start < corpus.len() {
        out.push(corpus[start..].to_vec());
    }
    out
}

/// User + system CPU time of `pid` so far, threads that have ended
/// included: to the nanosecond from the process's CPU clock where the
/// kernel lets us read it, else in `/proc/<pid>/stat`'s 10 ms ticks (at
/// 0.4 s of CPU a run, a tick is 2.5 %: too coarse to compare builds).
pub fn cpu_time(pid: u32) -> Result<Duration, Error> {
    if let Some(cpu) = process_cpu_clock(pid) {
        return Ok(cpu);
    }
    stat_cpu_time(pid)
}

/// The CPU clock of process `pid` (`clock_getcpuclockid`), if readable.
#[allow(unsafe_code)]
fn process_cpu_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

/// User + system CPU time of `pid` from `/proc/<pid>/stat`, in ticks.
fn stat_cpu_time(pid: u32) -> Result<Duration, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| Error::ProcStat { pid, source })?;
    parse_stat(&stat)
        .map(|(_, cpu)| cpu)
        .ok_or(Error::ProcFormat(pid))
}

/// The command name and user + system CPU time of one `/proc/…/stat`
/// line, or `None` if it is not one.
fn parse_stat(stat: &str) -> Option<(&str, Duration)> {
    // The name is in brackets and may contain spaces and brackets itself:
    // it ends at the last `)`.
    let (head, after) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    let total = ticks(11)? + ticks(12)?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some((name, Duration::from_millis(total * 10)))
}

/// Every thread of `pid` now: its id, name and CPU time so far. Threads
/// that end while they are read are skipped.
pub fn thread_times(pid: u32) -> Result<Vec<(u32, String, Duration)>, Error> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| Error::ProcStat { pid, source })?;
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, cpu)) = parse_stat(&stat) {
            threads.push((tid, name.to_owned(), cpu));
        }
    }
    Ok(threads)
}

/// [`thread_times`] of every pid in `pids`, together.
fn threads_of(pids: &[u32]) -> Result<Vec<(u32, String, Duration)>, Error> {
    Ok(pids
        .iter()
        .map(|&p| thread_times(p))
        .collect::<Result<Vec<_>, _>>()?
        .concat())
}

/// CPU used by thread name between two [`thread_times`] readings, the
/// most first.
fn by_thread_name(
    before: &[(u32, String, Duration)],
    after: &[(u32, String, Duration)],
) -> Vec<(String, Duration)> {
    // By id and name: an id the kernel reuses for a new thread of another
    // name during the run starts from zero.
    let start: std::collections::HashMap<(u32, &str), Duration> = before
        .iter()
        .map(|(tid, name, cpu)| ((*tid, name.as_str()), *cpu))
        .collect();
    let mut used: std::collections::BTreeMap<&str, Duration> = Default::default();
    for (tid, name, cpu) in after {
        let since = cpu.saturating_sub(
            start
                .get(&(*tid, name.as_str()))
                .copied()
                .unwrap_or_default(),
        );
        *used.entry(name).or_default() += since;
    }
    let mut used: Vec<(String, Duration)> = used
        .into_iter()
        .map(|(name, cpu)| (name.to_owned(), cpu))
        .collect();
    used.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    used
}

/// Runs `plan` and reports.
pub async fn run(plan: &Plan) -> Result<Report, Error> {
    let start_ns = plan
        .start_ns
        .unwrap_or(trident_line_protocol::test_helpers::CORPUS_START_NS);
    let bodies = std::sync::Arc::new(bodies(plan.lines, plan.batch, plan.seed, start_ns));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.connections)
        .build()?;
    let cpu_before = plan
        .target_pids
        .iter()
        .map(|&p| cpu_time(p))
        .collect::<Result<Vec<_>, _>>()?;
    let threads_before = threads_of(&plan.target_pids)?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let (bodies, next, client, url) = (
            bodies.clone(),
            next.clone(),
            client.clone(),
            plan.url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                let status = match client.post(&url).body(body.clone()).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        // Drain the body so the connection is reused.
                        let _ = resp.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                latencies.push(t.elapsed());
                statuses.push((i, status));
            }
            (latencies, statuses)
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses = Vec::new();
    for task in tasks {
        let (l, s) = task.await?;
        latencies.extend(l);
        statuses.extend(s);
    }
    let elapsed = started.elapsed();
    let target_cpu = if plan.target_pids.is_empty() {
        None
    } else {
        let mut total = Duration::ZERO;
        for (&pid, before) in plan.target_pids.iter().zip(cpu_before) {
            total += cpu_time(pid)?.saturating_sub(before);
        }
        Some(total)
    };
    let threads_after = threads_of(&plan.target_pids)?;
    let target_threads = by_thread_name(&threads_before, &threads_after);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let mut lines_ok = 0;
    let mut requests_ok = 0;
    let mut failures: std::collections::BTreeMap<u16, usize> = Default::default();
    for (i, status) in statuses {
        if (200..300).contains(&status) {
            requests_ok += 1;
            lines_ok += bodies[i].iter().filter(|&&b| b == b'\n').count();
        } else {
            *failures.entry(status).or_default() += 1;
        }
    }
    Ok(Report {
        lines_ok,
        requests_ok,
        failures: failures.into_iter().collect(),
        bytes: bodies.iter().map(Vec::len).sum(),
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        target_cpu,
        target_threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_line_protocol::test_helpers::{CORPUS_START_NS, telegraf_corpus};

    #[test]
    fn bodies_cut_at_line_boundaries_and_keep_every_line() {
        let all = bodies(1003, 100, 7, CORPUS_START_NS);
        assert_eq!(all.len(), 11);
        let lines: usize = all
            .iter()
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .sum();
        assert_eq!(lines, 1003);
        assert!(all.iter().all(|b| b.ends_with(b"\n")));
        assert_eq!(all.concat(), telegraf_corpus(1003, 7));
        // Stamped from elsewhere: the same lines, other timestamps.
        let later = bodies(1003, 100, 7, CORPUS_START_NS + 5_000_000_000).concat();
        assert_ne!(later, all.concat());
        let without_ts = |corpus: &[u8]| -> Vec<Vec<u8>> {
            corpus
                .split(|&b| b == b'\n')
                .map(|l| l[..l.iter().rposition(|&b| b == b' ').unwrap_or(0)].to_vec())
                .collect()
        };
        assert_eq!(without_ts(&later), without_ts(&all.concat()));
    }

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_even_with_brackets_in_the_name() {
        let line = "4242 (rdk:broker(1) x) S 1 2 3 0 -1 4194368 10 0 0 0 250 31 0 0 20 0 9 0 7";
        assert_eq!(
            parse_stat(line),
            Some(("rdk:broker(1) x", Duration::from_millis(2810)))
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no brackets at all"), None);
    }

    #[test]
    fn cpu_by_thread_name_counts_only_the_run_and_sums_a_name() {
        let ms = Duration::from_millis;
        let before = vec![
            (1, "main".to_owned(), ms(500)),
            (2, "worker".to_owned(), ms(100)),
        ];
        let after = vec![
            (1, "main".to_owned(), ms(510)),
            (2, "worker".to_owned(), ms(300)),
            // Started during the run: all of its time counts.
            (3, "worker".to_owned(), ms(50)),
            // An id reused by a thread of another name: counted from zero.
            (4, "new".to_owned(), ms(20)),
        ];
        let before = [before, vec![(4, "old".to_owned(), ms(900))]].concat();
        assert_eq!(
            by_thread_name(&before, &after),
            vec![
                ("worker".to_owned(), ms(250)),
                ("new".to_owned(), ms(20)),
                ("main".to_owned(), ms(10))
            ]
        );
    }

    #[test]
    fn a_busy_thread_of_this_process_is_seen_by_name() {
        // A fixed amount of work, read while the thread still lives: its
        // CPU time is there however loaded the machine is.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let before = thread_times(std::process::id()).unwrap();
        let busy = std::thread::Builder::new()
            .name("loadgen-busy".into())
            .spawn(move || {
                let mut x = 0u64;
                for _ in 0..100_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                let _ = done_tx.send(x);
                let _ = exit_rx.recv();
            })
            .unwrap();
        let _ = done_rx.recv();
        let after = thread_times(std::process::id()).unwrap();
        let _ = exit_tx.send(());
        let _ = busy.join();
        let used = by_thread_name(&before, &after);
        let busy_cpu = used
            .iter()
            .find(|(name, _)| name == "loadgen-busy")
            .map(|(_, cpu)| *cpu);
        assert!(
            busy_cpu.is_some_and(|cpu| cpu >= Duration::from_millis(30)),
            "{used:?}"
        );
    }

    /// What bench-ab relies on: the clock moves by less than a tick, and
    /// it keeps the CPU of threads that have ended (a sum over the live
    /// threads in /proc would lose it). The two readings of stat and the
    /// clock are not compared: the kernel brings them up to date at
    /// different moments (a CI run saw the clock 14 ms ahead of stat).
    #[test]
    fn the_cpu_clock_is_finer_than_a_tick_and_keeps_ended_threads() {
        let pid = std::process::id();
        // The smallest of twenty first steps: one read late because this
        // thread was preempted while another test's thread ran is not
        // the clock's step.
        let step = (0..20)
            .map(|_| {
                let first = process_cpu_clock(pid).expect("the process CPU clock is readable");
                loop {
                    let now = process_cpu_clock(pid).unwrap_or(first);
                    if now != first {
                        break now.saturating_sub(first);
                    }
                }
            })
            .min()
            .unwrap_or_default();
        assert!(
            step < Duration::from_millis(10),
            "the clock steps by {step:?}"
        );

        let before = process_cpu_clock(pid).unwrap();
        // A thread that uses at least 100 ms of CPU (its own stat says so)
        // and ends.
        std::thread::spawn(|| {
            let mut x = 0u64;
            loop {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let own = std::fs::read_to_string("/proc/thread-self/stat")
                    .ok()
                    .and_then(|stat| parse_stat(&stat).map(|(_, cpu)| cpu));
                if own.is_some_and(|cpu| cpu >= Duration::from_millis(100)) {
                    break;
                }
            }
        })
        .join()
        .unwrap();
        let used = process_cpu_clock(pid).unwrap() - before;
        assert!(used >= Duration::from_millis(100), "{used:?}");
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let t = cpu_time(std::process::id()).unwrap();
        assert!(t < Duration::from_secs(3600));
        let err = cpu_time(u32::MAX).unwrap_err().to_string();
        assert!(err.contains("pid"), "{err}");
    }
}
