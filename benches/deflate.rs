//! permessage-deflate: which deflate crate, measured the way ringws uses one. Every message is
//! compressed from an empty window (reset, sync flush, the `00 00 ff ff` tail stripped) and
//! inflated from an empty window (the tail put back), on trade/ticker JSON of 256 B, 4 KiB and
//! 64 KiB:
//! - `zlib-rs`: ringws's own [`Deflater`] and [`Inflater`] (the `zlib-rs` crate, direct);
//! - `flate2`: `flate2` on its `zlib-rs` backend (`Compress::new_with_window_bits`, raw, 15 bits);
//! - `miniz_oxide`: its raw compressor reset per message and `DecompressorOxide`.
//!
//! Compression at levels 1, 2 and 6; inflating reads each crate's own level-1 and level-6 output.
//! Throughput is of the uncompressed bytes. Before measuring it checks that every crate inflates
//! every other crate's output, prints the compressed size ratios, and checks which compressors
//! keep to a window smaller than 15 bits (a client's `server_max_window_bits`). The `threshold`
//! group compresses 64–512 B messages with ringws's `Deflater` to place
//! `deflate_compress_bytes_min`.

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::DataFormat;
use miniz_oxide::deflate::core::{CompressionStrategy, CompressorOxide, TDEFLFlush, compress};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use ringws::proto::deflate::{Deflater, Inflater, SYNC_TAIL};
use std::hint::black_box;

const SIZES: [usize; 3] = [256, 4096, 65536];
/// Level 1 is zlib-rs's `deflate_quick` (static Huffman codes only), 2 its `deflate_fast`
/// (dynamic codes), 6 the zlib default.
const LEVELS: [u8; 3] = [1, 2, 6];
/// The streams inflated: each crate's own level-1 and level-6 output.
const INFLATE_LEVELS: [u8; 2] = [1, 6];
const THRESHOLD_SIZES: [usize; 4] = [64, 128, 256, 512];

/// Trade and ticker objects whose numbers and symbols vary (a deterministic xorshift), one per
/// line, cut to `size` bytes.
fn json_like(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD"];
    let mut out = String::with_capacity(size + 256);
    while out.len() < size {
        let r = next();
        let symbol = symbols[(r % 5) as usize];
        let price = 10_000 + r % 40_000_000;
        let ts = 1_732_406_400_000 + (r >> 20) % 1_000_000;
        if r % 3 == 0 {
            out.push_str(&format!(
                "{{\"type\":\"ticker\",\"symbol\":\"{symbol}\",\"bid\":\"{}.{:02}\",\"ask\":\"{}.{:02}\",\"volume_24h\":\"{}.{:04}\",\"ts\":{ts}}}\n",
                price / 100,
                price % 100,
                price / 100 + 1,
                (price + 37) % 100,
                (r >> 8) % 100_000,
                (r >> 30) % 10_000,
            ));
        } else {
            out.push_str(&format!(
                "{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"price\":\"{}.{:02}\",\"size\":\"0.{:04}\",\"side\":\"{}\",\"trade_id\":{},\"ts\":{ts}}}\n",
                price / 100,
                price % 100,
                (r >> 12) % 10_000,
                if r & 1 == 0 { "buy" } else { "sell" },
                (r >> 24) % 100_000_000,
            ));
        }
    }
    out.truncate(size);
    out.into_bytes()
}

/// One crate, used per message with a fresh window; `out` is appended to.
trait Codec {
    const NAME: &'static str;
    fn new(level: u8) -> Self;
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>);
    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>);
}

struct ZlibRs {
    deflater: Deflater,
    inflater: Inflater,
}

impl Codec for ZlibRs {
    const NAME: &'static str = "zlib-rs";

    fn new(level: u8) -> Self {
        ZlibRs {
            deflater: Deflater::new(level, 15),
            inflater: Inflater::new(),
        }
    }

    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.deflater.compress_message(input, out);
    }

    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.inflater
            .inflate_message(input, out, u64::MAX, true)
            .expect("zlib-rs inflates");
    }
}

struct Flate2 {
    compress: Compress,
    decompress: Decompress,
}

impl Codec for Flate2 {
    const NAME: &'static str = "flate2";

    fn new(level: u8) -> Self {
        Flate2 {
            compress: Compress::new_with_window_bits(Compression::new(level.into()), false, 15),
            decompress: Decompress::new_with_window_bits(false, 15),
        }
    }

    fn compress(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        self.compress.reset();
        let start = out.len();
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("flate2 compresses");
            input = &input[(self.compress.total_in() - before) as usize..];
            // Done once all input is taken and the flush left output room unused.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }

    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.decompress.reset(false);
        for mut part in [input, &SYNC_TAIL[..]] {
            loop {
                out.reserve((part.len() * 4).max(4096));
                let before = self.decompress.total_in();
                self.decompress
                    .decompress_vec(part, out, FlushDecompress::Sync)
                    .expect("flate2 inflates");
                part = &part[(self.decompress.total_in() - before) as usize..];
                if part.is_empty() && out.len() < out.capacity() {
                    break;
                }
            }
        }
    }
}

struct Miniz {
    compressor: CompressorOxide,
    decompressor: Box<DecompressorOxide>,
}

impl Codec for Miniz {
    const NAME: &'static str = "miniz_oxide";

    fn new(level: u8) -> Self {
        Miniz {
            compressor: miniz_compressor(level, 15),
            decompressor: Box::default(),
        }
    }

    fn compress(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        self.compressor.reset();
        let start = out.len();
        loop {
            let filled = out.len();
            let step = (input.len() / 2 + 64).max(1024);
            out.resize(filled + step, 0);
            let (_, used, wrote) = compress(
                &mut self.compressor,
                input,
                &mut out[filled..],
                TDEFLFlush::Sync,
            );
            out.truncate(filled + wrote);
            input = &input[used..];
            if input.is_empty() && wrote < step {
                break;
            }
        }
        if out[start..].ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }

    /// Inflates into `out` used as one flat buffer (no wrapping window: the message is the
    /// window), growing it when miniz asks for more room.
    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.decompressor.init();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
            | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
        let mut pos = out.len();
        for mut part in [input, &SYNC_TAIL[..]] {
            loop {
                if out.len() - pos < 4096 {
                    out.resize(out.len() + (part.len() * 4).max(4096), 0);
                }
                let (status, used, wrote) =
                    decompress(&mut self.decompressor, part, &mut out[..], pos, flags);
                pos += wrote;
                part = &part[used..];
                match status {
                    TINFLStatus::HasMoreOutput => continue,
                    TINFLStatus::NeedsMoreInput | TINFLStatus::Done if part.is_empty() => break,
                    s => panic!("miniz_oxide inflate: {s:?}"),
                }
            }
        }
        out.truncate(pos);
    }
}

fn miniz_compressor(level: u8, window_bits: u8) -> CompressorOxide {
    CompressorOxide::with_params(
        DataFormat::Raw,
        level,
        CompressionStrategy::Default,
        window_bits,
    )
}

fn compressed<C: Codec>(level: u8, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    C::new(level).compress(input, &mut out);
    out
}

fn inflated<C: Codec>(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    C::new(1).inflate(input, &mut out);
    out
}

/// Every crate's output, inflated by every crate, gives the message back; prints the ratios.
fn check_and_print_ratios() {
    println!("compressed size / message size (fresh window per message, tail stripped):");
    let mut sizes = [&SIZES[..], &THRESHOLD_SIZES[..]].concat();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let msg = json_like(size);
        for level in LEVELS {
            let streams = [
                (ZlibRs::NAME, compressed::<ZlibRs>(level, &msg)),
                (Flate2::NAME, compressed::<Flate2>(level, &msg)),
                (Miniz::NAME, compressed::<Miniz>(level, &msg)),
            ];
            let mut line = format!("  {size:>6} B level {level}:");
            for (name, stream) in &streams {
                assert_eq!(inflated::<ZlibRs>(stream), msg, "{name} -> zlib-rs");
                assert_eq!(inflated::<Flate2>(stream), msg, "{name} -> flate2");
                assert_eq!(inflated::<Miniz>(stream), msg, "{name} -> miniz_oxide");
                let ratio = stream.len() as f64 / msg.len() as f64;
                line += &format!("  {name} {} B ({ratio:.3})", stream.len());
            }
            println!("{line}");
        }
    }
}

/// Whether `stream` inflates to `msg` through a window of exactly `window_bits`: miniz_oxide's
/// inflater used with a wrapping output buffer of `1 << window_bits` bytes, which is then all the
/// history there is. A reference past it reads the wrong bytes (miniz does not check distances
/// in this mode), so the output differs from `msg`. (zlib-rs's `Inflate` with a small window is
/// no such judge: it accepted streams that reach past it.)
fn fits_window(stream: &[u8], msg: &[u8], window_bits: u8) -> bool {
    let mut r = Box::<DecompressorOxide>::default();
    let mut window = vec![0u8; 1 << window_bits];
    let mask = window.len() - 1;
    let mut out = Vec::with_capacity(msg.len());
    let mut pos = 0;
    let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
    for mut part in [stream, &SYNC_TAIL[..]] {
        loop {
            let (status, used, wrote) = decompress(&mut r, part, &mut window, pos, flags);
            out.extend_from_slice(&window[pos..pos + wrote]);
            pos = (pos + wrote) & mask;
            part = &part[used..];
            match status {
                TINFLStatus::HasMoreOutput => {}
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if part.is_empty() => break,
                _ => return false,
            }
        }
    }
    out == msg
}

/// Which compressors keep to a smaller window: random bytes repeated every 2000 bytes, which
/// compress only through references 2000 bytes back (or further), asked for 10 and 12 bits.
fn check_windows() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let unit: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let msg: Vec<u8> = unit.iter().cycle().take(65536).copied().collect();
    println!(
        "a 64 KiB message of random bytes repeated every 2000 B, compressed for a smaller window:"
    );
    for bits in [10u8, 12] {
        for level in [1u8, 6] {
            let mut zr = Vec::new();
            Deflater::new(level, bits).compress_message(&msg, &mut zr);
            let mut f2 =
                Compress::new_with_window_bits(Compression::new(level.into()), false, bits);
            let mut fl = Vec::with_capacity(2 * msg.len());
            f2.compress_vec(&msg, &mut fl, FlushCompress::Sync).unwrap();
            fl.truncate(fl.len() - SYNC_TAIL.len());
            let mut mz = Miniz::new(level);
            mz.compressor = miniz_compressor(level, bits);
            let mut mo = Vec::new();
            mz.compress(&msg, &mut mo);
            let mut line = format!("  {bits} bits level {level}:");
            for (name, stream) in [("zlib-rs", &zr), ("flate2", &fl), ("miniz_oxide", &mo)] {
                let ok = fits_window(stream, &msg, bits);
                let verdict = if ok {
                    "valid"
                } else {
                    "INVALID (reaches past the window)"
                };
                line += &format!("  {name} {} B {verdict}", stream.len());
            }
            println!("{line}");
        }
    }
}

/// Measures `run(input, out)`; `out` is cleared before each run and keeps its capacity.
fn bench_message(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    input: &[u8],
    mut run: impl FnMut(&[u8], &mut Vec<u8>),
) {
    let mut out = Vec::with_capacity(2 * input.len() + 8192);
    group.bench_function(id, |b| {
        b.iter(|| {
            out.clear();
            run(black_box(input), &mut out);
            black_box(out.len())
        })
    });
}

fn compress_group<C: Codec>(c: &mut Criterion, group_name: &str, sizes: &[usize]) {
    let mut group = c.benchmark_group(group_name);
    for &size in sizes {
        let msg = json_like(size);
        group.throughput(Throughput::Bytes(size as u64));
        for level in LEVELS {
            let mut codec = C::new(level);
            let id = BenchmarkId::new(format!("{}/L{level}", C::NAME), size);
            bench_message(&mut group, id, &msg, |input, out| {
                codec.compress(input, out)
            });
        }
    }
    group.finish();
}

fn inflate_group<C: Codec>(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate/inflate");
    for size in SIZES {
        let msg = json_like(size);
        group.throughput(Throughput::Bytes(size as u64));
        for level in INFLATE_LEVELS {
            let stream = compressed::<C>(level, &msg);
            let mut codec = C::new(level);
            let id = BenchmarkId::new(format!("{}/L{level}", C::NAME), size);
            bench_message(&mut group, id, &stream, |input, out| {
                codec.inflate(input, out)
            });
        }
    }
    group.finish();
}

fn compress_all(c: &mut Criterion) {
    compress_group::<ZlibRs>(c, "deflate/compress", &SIZES);
    compress_group::<Flate2>(c, "deflate/compress", &SIZES);
    compress_group::<Miniz>(c, "deflate/compress", &SIZES);
}

fn inflate_all(c: &mut Criterion) {
    inflate_group::<ZlibRs>(c);
    inflate_group::<Flate2>(c);
    inflate_group::<Miniz>(c);
}

/// Small messages through ringws's `Deflater`, for `deflate_compress_bytes_min`.
fn threshold(c: &mut Criterion) {
    compress_group::<ZlibRs>(c, "deflate/threshold", &THRESHOLD_SIZES);
}

fn checks(_: &mut Criterion) {
    check_and_print_ratios();
    check_windows();
}

criterion_group!(benches, checks, compress_all, inflate_all, threshold);
criterion_main!(benches);
