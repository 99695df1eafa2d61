//! Criterion benchmarks of the limiter (to be written: see BENCHMARKS.md).
#![cfg(not(loom))]

use criterion::{Criterion, criterion_group, criterion_main};

fn placeholder(_c: &mut Criterion) {}

criterion_group!(benches, placeholder);
criterion_main!(benches);
