//! Protocol-core benchmarks: unmask (word-wide vs byte reference), frame header parse, UTF-8.
//! Run: cargo bench --bench proto

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringws::proto::connection::{Connection, Limits, MessageKind, Role, Sink};
use ringws::proto::frame::{OpCode, Role as FrameRole, encode_frame, parse_header};
use ringws::proto::mask::{unmask, unmask_bytewise};
use ringws::proto::utf8;
use std::hint::black_box;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn bench_unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 128, 1024, 16 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| unmask(black_box(&mut buf), KEY, 1))
        });
        g.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| unmask_bytewise(black_box(&mut buf), KEY, 1))
        });
    }
    g.finish();
}

fn bench_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    for (name, len) in [("len7", 20usize), ("len16", 512), ("len64", 70_000)] {
        let mut frame = Vec::new();
        encode_frame(&mut frame, true, OpCode::Binary, &vec![0; len], Some(KEY));
        g.bench_function(name, |b| {
            b.iter(|| parse_header(black_box(&frame), FrameRole::Server, 0))
        });
    }
    g.finish();
}

struct Count(usize);
impl Sink for Count {
    fn message(&mut self, _: MessageKind, p: &[u8]) {
        self.0 += p.len();
    }
    fn send_frame(&mut self, _: &[u8]) {}
}

fn bench_receive(c: &mut Criterion) {
    // 100 masked 20-byte text frames in one buffer, parsed, unmasked, validated and delivered.
    let mut g = c.benchmark_group("receive");
    let mut stream = Vec::new();
    for _ in 0..100 {
        encode_frame(
            &mut stream,
            true,
            OpCode::Text,
            b"01234567890123456789",
            Some(KEY),
        );
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("100x20B_text", |b| {
        let mut conn = Connection::new(Role::Server, Limits::default(), 0);
        let mut buf = stream.clone();
        let mut sink = Count(0);
        b.iter(|| {
            buf.copy_from_slice(&stream);
            conn.receive(black_box(&mut buf), &mut sink).unwrap();
        })
    });
    g.finish();
}

fn bench_utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii = vec![b'a'; 64 * 1024];
    let mixed: Vec<u8> = "ringws: κόσμε, 世界, 🚀 and plain ascii text. "
        .repeat(1500)
        .into_bytes();
    for (name, data) in [("ascii_64k", &ascii), ("mixed_64k", &mixed)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| utf8::validate(black_box(data)).unwrap())
        });
        g.bench_function(format!("{name}_incremental_1k"), |b| {
            b.iter(|| {
                let mut v = utf8::Utf8Validator::new();
                for piece in data.chunks(1000) {
                    v.feed(black_box(piece)).unwrap();
                }
                v.finish().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_unmask,
    bench_header,
    bench_receive,
    bench_utf8
);
criterion_main!(benches);
