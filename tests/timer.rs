//! The timer wheel against its firing contract: unit cases, then a model test.
//!
//! Contract (see `src/timer.rs`): a timer inserted with `deadline_ms > now` fires in the first
//! `advance(now_ms)` with `now_ms >= deadline_ms` rounded up to a multiple of `tick_ms`; one
//! inserted with `deadline_ms <= now` fires in the next `advance`. Exactly once, unless cancelled.

use proptest::collection::vec;
use proptest::prelude::*;
use ringws::timer::reference::{Harness, Op, run_bytes};
use ringws::timer::{Full, TimerId, TimerWheel};

/// Advances to `now_ms`, returning the tokens fired, sorted.
fn advance(wheel: &mut TimerWheel, now_ms: u64) -> Vec<u64> {
    let mut fired = Vec::new();
    wheel.advance(now_ms, &mut |_, token| fired.push(token));
    fired.sort_unstable();
    fired
}

#[test]
fn fires_at_deadline_not_before() {
    let mut wheel = TimerWheel::new(8, 1, 64, 0);
    wheel.insert(37, 7).unwrap();
    assert_eq!(advance(&mut wheel, 36), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 37), vec![7]);
    assert!(wheel.is_empty());
}

#[test]
fn fires_at_deadline_rounded_up_to_the_tick() {
    let mut wheel = TimerWheel::new(8, 10, 64, 0);
    wheel.insert(105, 1).unwrap();
    wheel.insert(110, 2).unwrap();
    wheel.insert(111, 3).unwrap();
    assert_eq!(advance(&mut wheel, 105), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 109), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 110), vec![1, 2]);
    assert_eq!(advance(&mut wheel, 119), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 120), vec![3]);
}

#[test]
fn callback_gets_the_inserted_id_and_token() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    let id = wheel.insert(50, 0xdead_beef).unwrap();
    let mut fired: Vec<(TimerId, u64)> = Vec::new();
    wheel.advance(50, &mut |id, token| fired.push((id, token)));
    assert_eq!(fired, vec![(id, 0xdead_beef)]);
}

#[test]
fn cancel_prevents_firing() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    let id = wheel.insert(50, 1).unwrap();
    wheel.insert(50, 2).unwrap();
    assert!(wheel.cancel(id));
    assert_eq!(wheel.len(), 1);
    assert_eq!(advance(&mut wheel, 1_000), vec![2]);
}

#[test]
fn cancel_twice_returns_false() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    let id = wheel.insert(50, 1).unwrap();
    assert!(wheel.cancel(id));
    assert!(!wheel.cancel(id));
    assert!(wheel.is_empty());
}

#[test]
fn cancel_after_firing_returns_false() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    let id = wheel.insert(50, 1).unwrap();
    assert_eq!(advance(&mut wheel, 50), vec![1]);
    assert!(!wheel.cancel(id));
}

#[test]
fn stale_id_after_reuse_returns_false_and_touches_nothing() {
    let mut wheel = TimerWheel::new(1, 10, 16, 0);
    let old = wheel.insert(50, 1).unwrap();
    assert!(wheel.cancel(old));
    let new = wheel.insert(60, 2).unwrap();
    assert_ne!(old, new);
    assert!(!wheel.cancel(old));
    assert_eq!(wheel.len(), 1);
    assert_eq!(advance(&mut wheel, 60), vec![2]);
    // Reused after firing, too.
    let newer = wheel.insert(70, 3).unwrap();
    assert!(!wheel.cancel(new));
    assert!(wheel.cancel(newer));
}

#[test]
fn full_until_a_timer_is_cancelled_or_fires() {
    let mut wheel = TimerWheel::new(2, 10, 16, 0);
    let first = wheel.insert(50, 1).unwrap();
    wheel.insert(90, 2).unwrap();
    assert_eq!(wheel.insert(70, 3), Err(Full));
    assert_eq!(wheel.len(), 2);
    assert!(wheel.cancel(first));
    wheel.insert(70, 3).unwrap();
    assert_eq!(wheel.insert(80, 4), Err(Full));
    assert_eq!(advance(&mut wheel, 70), vec![3]);
    wheel.insert(80, 4).unwrap();
    assert_eq!(advance(&mut wheel, 100), vec![2, 4]);
}

#[test]
fn zero_capacity_is_always_full() {
    let mut wheel = TimerWheel::new(0, 10, 16, 0);
    assert_eq!(wheel.insert(50, 1), Err(Full));
    assert_eq!(wheel.next_deadline_ms(), None);
}

#[test]
fn big_time_jump_fires_everything_due_exactly_once() {
    // 2.56 s rotation; deadlines every 7 ms over 10 minutes, many rotations deep.
    let mut wheel = TimerWheel::new(100_000, 10, 256, 1_000);
    let deadlines: Vec<u64> = (0..90_000).map(|i| 1_001 + i * 7).collect();
    for (token, &deadline_ms) in deadlines.iter().enumerate() {
        wheel.insert(deadline_ms, token as u64).unwrap();
    }
    let jump_ms = 1_000 + 300_000;
    let due_ms = jump_ms / 10 * 10; // the last tick boundary reached
    let want: Vec<u64> = (0..deadlines.len() as u64)
        .filter(|&t| deadlines[t as usize] <= due_ms)
        .collect();
    assert_eq!(advance(&mut wheel, jump_ms), want);
    assert_eq!(wheel.len(), deadlines.len() - want.len());
    // A jump of a year fires the rest, once.
    let rest = advance(&mut wheel, jump_ms + 365 * 24 * 3_600_000);
    assert_eq!(
        rest,
        (want.len() as u64..deadlines.len() as u64).collect::<Vec<_>>()
    );
    assert!(wheel.is_empty());
    assert_eq!(advance(&mut wheel, u64::MAX / 2), Vec::<u64>::new());
}

#[test]
fn past_deadlines_fire_on_next_advance() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    advance(&mut wheel, 1_005);
    wheel.insert(1_001, 1).unwrap(); // past, inside the current tick
    wheel.insert(0, 2).unwrap();
    wheel.insert(1_005, 3).unwrap(); // exactly now
    wheel.insert(1_006, 4).unwrap(); // future: waits for 1_010
    assert_eq!(wheel.next_deadline_ms(), Some(1_005));
    assert_eq!(advance(&mut wheel, 1_005), vec![1, 2, 3]);
    assert_eq!(advance(&mut wheel, 1_009), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 1_010), vec![4]);
}

#[test]
fn time_going_backwards_counts_as_the_latest_time() {
    let mut wheel = TimerWheel::new(8, 10, 16, 0);
    advance(&mut wheel, 500);
    wheel.insert(400, 1).unwrap();
    wheel.insert(510, 2).unwrap();
    assert_eq!(advance(&mut wheel, 100), vec![1]);
    assert_eq!(advance(&mut wheel, 509), Vec::<u64>::new());
    assert_eq!(advance(&mut wheel, 510), vec![2]);
}

#[test]
fn deadlines_beyond_one_rotation_fire_on_time_not_early() {
    // 8 slots of 10 ms: an 80 ms rotation. 1_000 and 1_040 share a slot with 200.
    let mut wheel = TimerWheel::new(8, 10, 8, 0);
    wheel.insert(1_000, 1).unwrap();
    wheel.insert(1_040, 2).unwrap();
    wheel.insert(200, 3).unwrap();
    let mut fired_at = Vec::new();
    for now_ms in (0..=1_100).step_by(5) {
        for token in advance(&mut wheel, now_ms) {
            fired_at.push((token, now_ms));
        }
    }
    assert_eq!(fired_at, vec![(3, 200), (1, 1_000), (2, 1_040)]);
}

#[test]
fn next_deadline_is_the_first_firing_tick() {
    let mut wheel = TimerWheel::new(8, 10, 64, 0);
    assert_eq!(wheel.next_deadline_ms(), None);
    let late = wheel.insert(305, 1).unwrap();
    assert_eq!(wheel.next_deadline_ms(), Some(310));
    wheel.insert(95, 2).unwrap();
    assert_eq!(wheel.next_deadline_ms(), Some(100));
    assert_eq!(advance(&mut wheel, 100), vec![2]);
    assert_eq!(wheel.next_deadline_ms(), Some(310));
    assert!(wheel.cancel(late));
    assert_eq!(wheel.next_deadline_ms(), None);
}

#[test]
fn next_deadline_forgets_cancelled_and_fired_timers() {
    let mut wheel = TimerWheel::new(8, 10, 64, 0);
    let early = wheel.insert(50, 1).unwrap();
    wheel.insert(70, 2).unwrap();
    wheel.insert(300, 3).unwrap();
    assert!(wheel.cancel(early));
    assert_eq!(wheel.next_deadline_ms(), Some(70));
    assert_eq!(advance(&mut wheel, 70), vec![2]);
    assert_eq!(wheel.next_deadline_ms(), Some(300));
}

#[test]
fn next_deadline_is_a_lower_bound_beyond_one_rotation() {
    // 640 ms rotation: 2_000 sits in the slot of tick 200 % 64 = 8, first reached at 80 ms.
    let mut wheel = TimerWheel::new(8, 10, 64, 0);
    wheel.insert(2_000, 1).unwrap();
    let mut wakeups = 0;
    while let Some(next_ms) = wheel.next_deadline_ms() {
        assert!(next_ms <= 2_000);
        wakeups += 1;
        let fired = advance(&mut wheel, next_ms);
        assert_eq!(fired.is_empty(), next_ms < 2_000);
    }
    assert_eq!(wakeups, 4); // 80, 720, 1_360, 2_000: one per rotation
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..10_000).prop_map(|offset_ms| Op::Insert { offset_ms }),
        1 => (-2_000i64..0).prop_map(|offset_ms| Op::Insert { offset_ms }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        5 => (0u64..3_000).prop_map(|step_ms| Op::Advance { step_ms }),
        2 => Just(Op::AdvanceToNext),
        1 => (3_000u64..100_000_000).prop_map(|step_ms| Op::Advance { step_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every advance fires exactly the timers the reference says are due (deadline rounded up to
    /// the tick, or past at insert); cancel results, Full, len and next_deadline_ms agree.
    #[test]
    fn wheel_matches_reference_model(
        tick_ms in 1u64..=50,
        slots_log2 in 0u32..=9,
        capacity in prop_oneof![0usize..=8, 64usize..=512],
        start_ms in 0u64..1 << 40,
        ops in vec(op(), 0..400),
    ) {
        let mut harness = Harness::new(capacity, tick_ms, 1 << slots_log2, start_ms);
        for op in ops {
            harness.apply(op);
        }
        harness.finish();
    }

    /// The fuzz target's decoder and checks, on random bytes.
    #[test]
    fn fuzz_decoder_on_random_bytes(data in vec(any::<u8>(), 0..900)) {
        run_bytes(&data);
    }
}
