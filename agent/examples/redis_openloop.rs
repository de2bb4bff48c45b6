//! An open-loop load generator for redis, for the colocation experiment
//! (`scripts/colocation-experiment`).
//!
//! Closed-loop generators (redis-benchmark) wait for a reply before sending the next request,
//! so when the server stalls they stall too and the stall never shows in their latencies
//! ("coordinated omission"). This one sends every request at its scheduled time, whatever has
//! come back, and measures each latency from the *scheduled* send time: when the server (or the
//! client's own thread) falls behind, the queue that builds up is in the numbers.
//!
//! Requests are GET (90 %) and SET (10 %) of 10 000 keys with 64-byte values, spread
//! round-robin over a few connections; one sender thread writes on schedule and one reader
//! thread per connection parses the RESP replies in order. Every second the latencies that
//! completed in that second are summarised (count, p50, p99, p999, max) as one JSON line in
//! `--out`, and the last complete second is served as Prometheus gauges on `--metrics-port`
//! (`redis_p99_ms`, `redis_p999_ms`, `redis_p50_ms`, `redis_rps`), which is how the entente
//! agent's SLO probe and the experiment's reactive controller see the service. At the end one
//! JSON summary of the whole run is printed on stdout.
//!
//! `cargo run --release -p entente-agent --example redis_openloop -- --addr 127.0.0.1:6390 \
//!   --rate 5000 --duration-s 60 --out latency.jsonl --metrics-port 9500`

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEYS: u64 = 10_000;
const VALUE: &str = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";

struct Args {
    addr: String,
    rate: f64,
    connections: usize,
    duration_s: f64,
    out: Option<String>,
    metrics_port: Option<u16>,
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:6379".into(),
        rate: 5000.0,
        connections: 4,
        duration_s: 60.0,
        out: None,
        metrics_port: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value(),
            "--rate" => args.rate = value().parse().expect("--rate: a number"),
            "--connections" => args.connections = value().parse().expect("--connections: a number"),
            "--duration-s" => args.duration_s = value().parse().expect("--duration-s: a number"),
            "--out" => args.out = Some(value()),
            "--metrics-port" => args.metrics_port = Some(value().parse().expect("--metrics-port: a port")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.rate > 0.0 && args.connections > 0 && args.duration_s > 0.0, "rate, connections, duration > 0");
    args
}

/// Latencies (µs) completed in the current second, and every latency of the run.
#[derive(Default)]
struct Recorder {
    window: Vec<u32>,
    all: Vec<u32>,
}

/// The last complete second, as served on the metrics endpoint.
#[derive(Default, Clone, Copy)]
struct WindowSummary {
    count: usize,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    max_us: u32,
}

fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarise(mut v: Vec<u32>) -> WindowSummary {
    v.sort_unstable();
    WindowSummary {
        count: v.len(),
        p50_us: quantile(&v, 0.50),
        p99_us: quantile(&v, 0.99),
        p999_us: quantile(&v, 0.999),
        max_us: v.last().copied().unwrap_or(0),
    }
}

/// Reads one RESP reply (simple string, error, integer or bulk string).
fn read_reply(reader: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<bool> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Ok(false);
    }
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().map_err(|_| std::io::Error::other(format!("bad bulk length {line:?}")))?;
        if len >= 0 {
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body)?;
        }
    } else if line.starts_with('-') {
        return Err(std::io::Error::other(format!("redis error: {}", line.trim())));
    }
    Ok(true)
}

fn command(i: u64) -> Vec<u8> {
    let key = format!("key:{}", i.wrapping_mul(2_654_435_761) % KEYS);
    if i % 10 == 0 {
        format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{VALUE}\r\n", key.len(), VALUE.len()).into_bytes()
    } else {
        format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
    }
}

fn preload(addr: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let mut batch = Vec::new();
        for &k in chunk {
            let key = format!("key:{k}");
            batch.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{VALUE}\r\n", key.len(), VALUE.len()).bytes());
        }
        writer.write_all(&batch)?;
        for _ in chunk {
            read_reply(&mut reader, &mut line)?;
        }
    }
    Ok(())
}

fn serve_metrics(port: u16, last: Arc<Mutex<WindowSummary>>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("cannot bind the metrics port");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut request);
            let s = *last.lock().unwrap();
            let body = format!(
                "# TYPE redis_p99_ms gauge\nredis_p99_ms {}\nredis_p999_ms {}\nredis_p50_ms {}\nredis_max_ms {}\nredis_rps {}\n",
                f64::from(s.p99_us) / 1e3,
                f64::from(s.p999_us) / 1e3,
                f64::from(s.p50_us) / 1e3,
                f64::from(s.max_us) / 1e3,
                s.count
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
}

fn main() {
    let args = parse_args();
    preload(&args.addr).expect("cannot preload redis");
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let last = Arc::new(Mutex::new(WindowSummary::default()));
    if let Some(port) = args.metrics_port {
        serve_metrics(port, last.clone());
    }
    let done = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));

    // Per connection: the writer half, and the scheduled send times of requests in flight.
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..args.connections {
        let stream = TcpStream::connect(&args.addr).expect("cannot connect to redis");
        stream.set_nodelay(true).unwrap();
        let in_flight: Arc<(Mutex<VecDeque<Instant>>, Condvar)> = Arc::default();
        writers.push((stream.try_clone().unwrap(), in_flight.clone()));
        let (recorder, done, errors) = (recorder.clone(), done.clone(), errors.clone());
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            loop {
                let scheduled = {
                    let (queue, ready) = &*in_flight;
                    let mut q = queue.lock().unwrap();
                    loop {
                        if let Some(t) = q.pop_front() {
                            break Some(t);
                        }
                        if done.load(Ordering::Relaxed) {
                            break None;
                        }
                        q = ready.wait_timeout(q, Duration::from_millis(50)).unwrap().0;
                    }
                };
                let Some(scheduled) = scheduled else { return };
                match read_reply(&mut reader, &mut line) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                let us = scheduled.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                recorder.lock().unwrap().window.push(us);
            }
        }));
    }

    // Once a second: summarise the second that ended.
    let reporter = {
        let (recorder, last, done) = (recorder.clone(), last.clone(), done.clone());
        let out = args.out.clone();
        std::thread::spawn(move || {
            let mut file = out.map(|p| std::fs::File::create(p).expect("cannot create --out"));
            let start = Instant::now();
            let mut second = 1u64;
            while !done.load(Ordering::Relaxed) {
                let at = start + Duration::from_secs(second);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let window = {
                    let mut r = recorder.lock().unwrap();
                    let w = std::mem::take(&mut r.window);
                    r.all.extend_from_slice(&w);
                    w
                };
                let s = summarise(window);
                *last.lock().unwrap() = s;
                if let Some(f) = file.as_mut() {
                    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
                    let _ = writeln!(
                        f,
                        "{{\"unix\":{unix:.3},\"second\":{second},\"count\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
                        s.count, s.p50_us, s.p99_us, s.p999_us, s.max_us
                    );
                    let _ = f.flush();
                }
                second += 1;
            }
        })
    };

    // The open loop: request i is due at start + i / rate, whatever has come back.
    let start = Instant::now();
    let total = (args.rate * args.duration_s) as u64;
    let mut sent = 0u64;
    let mut late_sends = 0u64;
    while sent < total {
        let due = start + Duration::from_secs_f64(sent as f64 / args.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        if now - due > Duration::from_millis(1) {
            late_sends += 1;
        }
        let (writer, in_flight) = &mut writers[(sent % args.connections as u64) as usize];
        {
            let (queue, ready) = &**in_flight;
            queue.lock().unwrap().push_back(due);
            ready.notify_one();
        }
        if writer.write_all(&command(sent)).is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
        sent += 1;
    }
    // Let the last replies arrive (up to 2 s), then stop.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drain_until && writers.iter().any(|(_, q)| !q.0.lock().unwrap().is_empty()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let lost: usize = writers.iter().map(|(_, q)| q.0.lock().unwrap().len()).sum();
    done.store(true, Ordering::Relaxed);
    for (w, _) in &writers {
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
    for r in readers {
        let _ = r.join();
    }
    let _ = reporter.join();
    let all = {
        let mut r = recorder.lock().unwrap();
        let rest = std::mem::take(&mut r.window);
        r.all.extend_from_slice(&rest);
        std::mem::take(&mut r.all)
    };
    let s = summarise(all);
    println!(
        "{{\"sent\":{sent},\"completed\":{},\"lost\":{lost},\"errors\":{},\"late_sends\":{late_sends},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"rate\":{},\"elapsed_s\":{:.3}}}",
        s.count,
        errors.load(Ordering::Relaxed),
        s.p50_us,
        s.p99_us,
        s.p999_us,
        s.max_us,
        args.rate,
        start.elapsed().as_secs_f64()
    );
}
