//! Sequence gap and reorder detection, per subscriber and in total.
use ringws::load::seq::{Seen, SeqCounts, SeqTracker};

fn run(seqs: &[u64], published: u64) -> SeqCounts {
    let mut t = SeqTracker::default();
    let mut c = SeqCounts::default();
    for &s in seqs {
        t.observe(s, &mut c);
    }
    t.finish(published, &mut c);
    c
}

#[test]
fn in_order_stream_has_no_errors() {
    let c = run(&[0, 1, 2, 3, 4], 5);
    assert_eq!(
        c,
        SeqCounts {
            in_order: 5,
            missing: 0,
            out_of_order: 0
        }
    );
    assert_eq!(c.errors(), 0);
}

#[test]
fn a_gap_counts_each_missing_message() {
    let c = run(&[0, 1, 4, 5], 6);
    assert_eq!(c.missing, 2);
    assert_eq!(c.out_of_order, 0);
}

#[test]
fn messages_never_received_at_the_end_are_missing() {
    assert_eq!(run(&[0, 1], 5).missing, 3);
    assert_eq!(run(&[], 4).missing, 4);
}

#[test]
fn a_late_message_is_out_of_order_not_missing() {
    let c = run(&[0, 2, 1, 3], 4);
    assert_eq!(c.missing, 0, "1 arrived, late");
    assert_eq!(c.out_of_order, 1);
    assert_eq!(c.errors(), 1);
}

#[test]
fn a_duplicate_is_out_of_order() {
    let c = run(&[0, 1, 1, 2], 3);
    assert_eq!((c.missing, c.out_of_order), (0, 1));
}

#[test]
fn observe_reports_what_it_saw() {
    let mut t = SeqTracker::default();
    let mut c = SeqCounts::default();
    assert_eq!(t.observe(0, &mut c), Seen::InOrder);
    assert_eq!(t.observe(3, &mut c), Seen::Gap(2));
    assert_eq!(t.observe(2, &mut c), Seen::Late);
    assert_eq!(t.next(), 4);
    assert_eq!((c.missing, c.out_of_order), (1, 1));
}

#[test]
fn counts_add_up_over_subscribers() {
    let mut total = SeqCounts::default();
    total.add(run(&[0, 2], 3));
    total.add(run(&[1, 0, 2], 3));
    assert_eq!(
        total.missing, 1,
        "one missing at the first, none at the second"
    );
    assert_eq!(total.out_of_order, 1);
}
