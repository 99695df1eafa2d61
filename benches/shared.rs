//! The shared limit (Redis) next to the local limiter, in one run, against a
//! real `redis-server` started on a free loopback port (Debian's package;
//! `REDIS_SERVER` names another binary).
//!
//! ```text
//! cargo bench --features redis --bench shared            # ~1 min
//! cargo bench --features redis --bench shared -- quick   # fewer calls
//! ```
//!
//! Rows (each limiter in-process; "3 replicas" = three limiters, each with
//! its own connection and background tasks, calls spread round-robin):
//!
//! - **uncontended**: one caller, acquire then release, the limit never
//!   reached: admission latency p50/p99 (the acquire alone) and calls/s.
//! - **parallel**: 64 callers, the limit never reached: calls/s and
//!   admission p50/p99.
//! - **contended**: 64 callers, limit 8, each call holding its slot 2 ms:
//!   calls/s (capacity 4 000/s) and the wait for a slot p50/p99.
//! - **10x overload**: open loop at 10x capacity (limit 5, 10 ms per call:
//!   500 calls/s; offered 5 000/s for 3 s), queue 10, timeout 50 ms:
//!   goodput, rejections and the reject latency p99.
//!
//! Redis commands per admitted call come from Redis's own `INFO
//! commandstats` (every EVALSHA, SUBSCRIBE, …) divided by admissions.
#![cfg(not(loom))]

#[path = "../tests/shared/redis.rs"]
#[allow(dead_code)]
mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_backpressure::shared::SharedLimit;
use mcp_backpressure::{Limiter, LimiterConfig};
use tokio::sync::Mutex;

use redis::RedisServer;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Local,
    Shared(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Local => "local".into(),
            Kind::Shared(1) => "shared, 1 replica".into(),
            Kind::Shared(n) => format!("shared, {n} replicas"),
        }
    }
}

fn limiters(kind: Kind, server: &RedisServer, key: &str, config: LimiterConfig) -> Vec<Limiter> {
    match kind {
        Kind::Local => vec![Limiter::new(config).unwrap()],
        Kind::Shared(n) => (0..n)
            .map(|_| {
                Limiter::builder(config.clone())
                    .shared(SharedLimit::new(server.url(), key))
                    .build()
                    .unwrap()
            })
            .collect(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Redis's count of commands clients sent so far.
fn redis_commands(server: &RedisServer) -> u64 {
    // INFO's first line is a bulk header; read it whole through a raw socket.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(
        server
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches("/0"),
    )
    .unwrap();
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if n == 0
            || buf.ends_with(b"\r\n\r\n")
            || (buf.len() > 4 && buf.ends_with(b"\r\n") && !buf.starts_with(b"$"))
        {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(len) = text
            .strip_prefix('$')
            .and_then(|t| t.split("\r\n").next())
            .and_then(|n| n.parse::<usize>().ok())
            && buf.len() >= len + text.find("\r\n").unwrap() + 4
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        // Only commands clients sent: the ones scripts run are counted too,
        // under their own names.
        .filter(|l| {
            [
                "evalsha:",
                "eval:",
                "script|load:",
                "subscribe:",
                "hello:",
                "client|setinfo:",
                "select:",
                "ping:",
            ]
            .iter()
            .any(|c| l.strip_prefix("cmdstat_").is_some_and(|r| r.starts_with(c)))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

struct Row {
    name: String,
    calls: u64,
    rate: f64,
    p50: Duration,
    p99: Duration,
    commands_per_call: f64,
    extra: String,
}

async fn closed_loop(
    kind: Kind,
    server: &RedisServer,
    key: &str,
    callers: usize,
    calls: usize,
    limit: usize,
    hold: Duration,
) -> Row {
    let config = LimiterConfig::new(limit)
        .with_queue_size(1000)
        .with_queue_timeout(Duration::from_secs(30));
    let replicas = limiters(kind, server, key, config);
    // Warm up: the first sweep, scripts loaded.
    for l in &replicas {
        drop(l.acquire().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = redis_commands(server);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let started = Instant::now();
    let per = calls / callers;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let limiter = replicas[c % replicas.len()].clone();
            let latencies = latencies.clone();
            tokio::spawn(async move {
                let mut mine = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let permit = limiter.acquire().await.unwrap();
                    mine.push(t.elapsed());
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    drop(permit);
                }
                latencies.lock().await.extend(mine);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    // Let the last releases land before counting commands.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let commands = redis_commands(server).saturating_sub(before);
    let mut lat = Arc::try_unwrap(latencies).unwrap().into_inner();
    lat.sort();
    let done = (per * callers) as u64;
    Row {
        name: kind.name(),
        calls: done,
        rate: done as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        commands_per_call: if kind == Kind::Local {
            0.0
        } else {
            commands as f64 / done as f64
        },
        extra: String::new(),
    }
}

async fn overload(kind: Kind, server: &RedisServer, key: &str, seconds: f64) -> Row {
    let config = LimiterConfig::new(5)
        .with_queue_size(10)
        .with_queue_timeout(Duration::from_millis(50));
    let replicas = limiters(kind, server, key, config);
    for l in &replicas {
        drop(l.acquire().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = redis_commands(server);
    let rate = 5000.0;
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let results = Arc::new(Mutex::new((0u64, Vec::new())));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        let limiter = replicas[i % replicas.len()].clone();
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match limiter.acquire().await {
                Ok(permit) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    drop(permit);
                    results.lock().await.0 += 1;
                }
                Err(_) => results.lock().await.1.push(t.elapsed()),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let commands = redis_commands(server).saturating_sub(before);
    let (ok, mut rejects) = Arc::try_unwrap(results).unwrap().into_inner();
    rejects.sort();
    Row {
        name: kind.name(),
        calls: total as u64,
        rate: ok as f64 / elapsed.as_secs_f64(),
        p50: percentile(&rejects, 0.5),
        p99: percentile(&rejects, 0.99),
        commands_per_call: if kind == Kind::Local {
            0.0
        } else {
            commands as f64 / ok.max(1) as f64
        },
        extra: format!(
            "{} rejected; {:.2} commands per offered call",
            rejects.len(),
            commands as f64 / total as f64
        ),
    }
}

fn print(title: &str, what: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("| limiter | calls | {what} | p50 ms | p99 ms | Redis commands / admitted call | |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {} | {} | {:.2} | {} |",
            r.name,
            r.calls,
            r.rate,
            ms(r.p50),
            ms(r.p99),
            r.commands_per_call,
            r.extra
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kinds = [Kind::Local, Kind::Shared(1), Kind::Shared(3)];
    let scale = if quick { 1 } else { 4 };
    runtime.block_on(async {
        let mut rows = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            rows.push(closed_loop(kind, &server, &format!("u{i}"), 1, 2000 * scale, 1000, Duration::ZERO).await);
        }
        print("uncontended: 1 caller, acquire + release, limit never reached", "calls/s", &rows);
        let mut rows = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            rows.push(closed_loop(kind, &server, &format!("p{i}"), 64, 5120 * scale, 1000, Duration::ZERO).await);
        }
        print("parallel: 64 callers, limit never reached (admission p50/p99)", "calls/s", &rows);
        let mut rows = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            rows.push(closed_loop(kind, &server, &format!("c{i}"), 64, 2560 * scale, 8, Duration::from_millis(2)).await);
        }
        print("contended: 64 callers, limit 8, 2 ms per call (capacity 4000/s); p50/p99 = wait for a slot", "calls/s", &rows);
        let mut rows = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            rows.push(overload(kind, &server, &format!("o{i}"), if quick { 1.0 } else { 3.0 }).await);
        }
        print("10x overload: limit 5, 10 ms per call (capacity 500/s), 5000 calls/s offered, queue 10, timeout 50 ms; rate = goodput, p50/p99 = reject latency", "goodput/s", &rows);
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}
