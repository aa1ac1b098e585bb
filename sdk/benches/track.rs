//! The cost of one `track()` call on the caller's thread: building the event (UUIDv7,
//! timestamp) and pushing it into the buffer. Run with `cargo bench -p beacon-sdk`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

fn track(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    // Nothing listens on port 9: the sender never drains the buffer during the run, so
    // this measures the caller's side alone, including drop-oldest once it is full.
    let client = beacon::Client::builder("http://127.0.0.1:9")
        .site_id("site-001")
        .user_id("user123")
        .flush_interval(Duration::from_secs(3600))
        .batch_size(1000)
        .queue_capacity(100_000)
        .build()
        .expect("client");
    c.bench_function("page_view", |b| b.iter(|| client.page_view("/home")));
    c.bench_function("track_with_props", |b| {
        b.iter(|| client.track(beacon::event("signup").path("/welcome").prop("plan", "pro")))
    });
}

criterion_group!(benches, track);
criterion_main!(benches);
