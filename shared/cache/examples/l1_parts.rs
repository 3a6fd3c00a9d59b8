//! Where an L1 hit's time goes: each step of the hit path timed on its own, 200 000 times,
//! p50/p99/p99.9 in ns. `cargo run --release -p umcp-cache --example l1_parts`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

const N: u64 = 200_000;

#[derive(Clone)]
struct Entry {
    value: Option<Bytes>,
    started: Instant,
    ttl: Duration,
}

struct EntryExpiry;
impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _k: &String, v: &Entry, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

fn report(name: &str, h: &Histogram<u64>) {
    eprintln!(
        "{name:<34} p50={:>6} ns p99={:>6} ns p99.9={:>6} ns max={:>7} ns",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn time(name: &str, mut f: impl FnMut()) {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..N {
        let t = Instant::now();
        f();
        h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("record");
    }
    report(name, &h);
}

fn entry() -> Entry {
    Entry {
        value: Some(Bytes::from(vec![7u8; 512])),
        started: Instant::now(),
        ttl: Duration::from_secs(60),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    time("nothing (clock overhead)", || {});
    let generation = parking_lot::Mutex::new(7u64);
    time("format!(\"{gen}:{key}\")", || {
        black_box(format!("{}:{}", black_box(7u64), black_box("hot")));
    });
    time("parking_lot mutex (generation)", || {
        black_box(*generation.lock());
    });
    let weigher = |k: &String, e: &Entry| {
        u32::try_from(k.len() + e.value.as_ref().map_or(0, Bytes::len) + 96).unwrap_or(u32::MAX)
    };
    let future: moka::future::Cache<String, Entry> = moka::future::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(weigher)
        .expire_after(EntryExpiry)
        .build();
    future.insert("7:hot".to_owned(), entry()).await;
    let key = "7:hot".to_owned();
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..N {
        let t = Instant::now();
        black_box(future.get(&key).await);
        h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("record");
    }
    report("moka future get (ttl, weigher)", &h);
    let sync: moka::sync::Cache<String, Entry> = moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(weigher)
        .expire_after(EntryExpiry)
        .build();
    sync.insert("7:hot".to_owned(), entry());
    time("moka sync get (ttl, weigher)", || {
        black_box(sync.get(&key));
    });
    let plain: moka::sync::Cache<String, Entry> =
        moka::sync::Cache::builder().max_capacity(1 << 20).build();
    plain.insert("7:hot".to_owned(), entry());
    time("moka sync get (no ttl, no weigher)", || {
        black_box(plain.get(&key));
    });
    let quick: quick_cache::sync::Cache<(u64, String), Entry> =
        quick_cache::sync::Cache::new(10_000);
    quick.insert((7, "hot".to_owned()), entry());
    let qkey = (7u64, "hot".to_owned());
    time("quick_cache get", || {
        black_box(quick.get(&qkey));
    });
    let e = entry();
    time("Entry clone (Bytes refcount)", || {
        black_box(e.clone());
    });
    time("Instant::elapsed (servable)", || {
        black_box(e.started.elapsed());
    });
}
