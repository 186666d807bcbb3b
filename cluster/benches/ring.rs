//! Cost of placing one key: `cargo bench -p trident-cluster --bench ring`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use trident_cluster::Ring;

fn owners(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/owners");
    for nodes in [3usize, 12, 48] {
        let ids: Vec<String> = (0..nodes).map(|i| format!("influx-{i}")).collect();
        let ring = Ring::new(ids.iter().map(String::as_str));
        group.bench_function(format!("{nodes} nodes, rf 2"), |b| {
            let mut h = 0u64;
            b.iter(|| {
                h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
                black_box(ring.owners(black_box(h), 2))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, owners);
criterion_main!(benches);
