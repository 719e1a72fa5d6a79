//! Sequence checking for one subscriber: gaps (missing broadcasts) and reordering.

/// What one received sequence number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected.
    InOrder,
    /// Later than expected: this many before it are missing (so far).
    Gap(u64),
    /// Earlier than expected: out of order, or a duplicate.
    Late,
}

/// Tracks the next sequence number one subscriber expects. 8 bytes, kept per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    next: u64,
    /// Sequence numbers skipped by gaps and not seen since.
    holes: u64,
}

/// Totals over many trackers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCounts {
    pub in_order: u64,
    pub missing: u64,
    pub out_of_order: u64,
}

impl SeqCounts {
    pub fn add(&mut self, other: SeqCounts) {
        self.in_order += other.in_order;
        self.missing += other.missing;
        self.out_of_order += other.out_of_order;
    }

    pub fn errors(&self) -> u64 {
        self.missing + self.out_of_order
    }
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64, counts: &mut SeqCounts) -> Seen {
        if seq == self.next {
            self.next += 1;
            counts.in_order += 1;
            Seen::InOrder
        } else if seq > self.next {
            let gap = seq - self.next;
            counts.missing += gap;
            counts.in_order += 1;
            self.holes += gap;
            self.next = seq + 1;
            Seen::Gap(gap)
        } else {
            // A late one was counted missing when its gap opened: it is out of order instead.
            // (A duplicate while holes are open is taken for a late one; either way an error.)
            if self.holes > 0 {
                self.holes -= 1;
                counts.missing -= 1;
            }
            counts.out_of_order += 1;
            Seen::Late
        }
    }

    /// At the end of the run, `published` broadcasts went out: those never seen are missing.
    pub fn finish(&self, published: u64, counts: &mut SeqCounts) {
        counts.missing += published.saturating_sub(self.next);
    }

    pub fn next(&self) -> u64 {
        self.next
    }
}
