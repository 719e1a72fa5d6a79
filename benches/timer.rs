//! Timer wheel costs: an insert+cancel pair (the common case: a timeout re-armed and never
//! reached), and advancing through 100k timers spread over 60 s.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ringws::timer::TimerWheel;
use std::hint::black_box;

const TIMERS: u64 = 100_000;
const SPREAD_MS: u64 = 60_000;
const TICK_MS: u64 = 10;
const SLOTS: usize = 4_096; // a 40.96 s rotation: some of the 60 s spread is a rotation deep

/// A wheel at time 0 holding `TIMERS` timers with deadlines spread evenly over `SPREAD_MS`,
/// scattered (multiplicative hash) so neighbouring tokens do not share a slot.
fn loaded_wheel() -> TimerWheel {
    let mut wheel = TimerWheel::new(2 * TIMERS as usize, TICK_MS, SLOTS, 0);
    for token in 0..TIMERS {
        let deadline_ms = 1 + token.wrapping_mul(0x9e37_79b9_7f4a_7c15) % SPREAD_MS;
        wheel.insert(deadline_ms, token).unwrap();
    }
    wheel
}

fn insert_cancel(c: &mut Criterion) {
    let mut wheel = loaded_wheel();
    let mut deadline_ms = 0;
    c.bench_function("timer/insert_cancel_pair_100k_pending", |b| {
        b.iter(|| {
            deadline_ms = (deadline_ms + 7_919) % SPREAD_MS + 1;
            let id = wheel.insert(black_box(deadline_ms), 1).unwrap();
            black_box(wheel.cancel(id))
        })
    });
}

/// Steady state: each iteration moves time by one tick, fires about 17 timers and re-arms each
/// one 60 s later, so 100k stay pending.
fn advance_tick(c: &mut Criterion) {
    let mut wheel = loaded_wheel();
    let mut now_ms = 0;
    let mut rearm = Vec::with_capacity(1_024);
    c.bench_function("timer/advance_one_tick_rearm_100k_pending", |b| {
        b.iter(|| {
            now_ms += TICK_MS;
            wheel.advance(now_ms, &mut |_, token| rearm.push(token));
            for token in rearm.drain(..) {
                wheel.insert(now_ms + SPREAD_MS, token).unwrap();
            }
        })
    });
}

/// Drains all 100k timers, one tick at a time over 60 s (6 000 advances).
fn advance_drain(c: &mut Criterion) {
    c.bench_function("timer/drain_100k_over_60s_by_tick", |b| {
        b.iter_batched(
            loaded_wheel,
            |mut wheel| {
                let mut fired = 0u64;
                for now_ms in (TICK_MS..=SPREAD_MS).step_by(TICK_MS as usize) {
                    wheel.advance(now_ms, &mut |_, _| fired += 1);
                }
                assert_eq!(fired, TIMERS);
                wheel
            },
            BatchSize::LargeInput,
        )
    });
}

/// Drains all 100k timers with one advance 60 s ahead (the big-jump path: one rotation walked).
fn advance_jump(c: &mut Criterion) {
    c.bench_function("timer/drain_100k_one_jump_60s", |b| {
        b.iter_batched(
            loaded_wheel,
            |mut wheel| {
                let mut fired = 0u64;
                wheel.advance(SPREAD_MS, &mut |_, _| fired += 1);
                assert_eq!(fired, TIMERS);
                wheel
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(
    benches,
    insert_cancel,
    advance_tick,
    advance_drain,
    advance_jump
);
criterion_main!(benches);
