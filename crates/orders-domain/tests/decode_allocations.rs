#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What decoding and validating a message costs in heap allocations, counted by a counting
//! global allocator. Text fields of up to 24 bytes are held inline (`Text`), so an order
//! whose text is that short allocates two blocks, whatever its number of items: its items'
//! vector, and validator's map of errors (the derived `validate` reserves it before it looks
//! at a nested field, even when nothing fails). With `String` fields it made one allocation
//! per non-empty field, each freed later by whichever thread drops the batch, and one more for
//! a copy of the timestamp's text: 27 for an order of 1 item.

use std::alloc::System;

use orders_domain::sample::generated_order;
use orders_domain::{UnknownFields, decode_order_with};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations made while decoding `message` under `policy` (the order is dropped outside).
fn allocations(message: &[u8], policy: UnknownFields) -> usize {
    let region = Region::new(GLOBAL);
    let order = decode_order_with(Some(message), 1 << 20, policy).unwrap();
    let made = region.change().allocations;
    drop(order);
    made
}

/// One test: the counting allocator sees every thread, so two tests at once would count each
/// other's allocations.
#[test]
fn decoding_allocates_two_blocks_and_one_per_text_over_24_bytes() {
    for items in [1, 3, 8] {
        let order = generated_order("alloc-", 42, items);
        let message = serde_json::to_vec(&order).unwrap();
        for policy in [UnknownFields::Reject, UnknownFields::Keep] {
            assert_eq!(
                allocations(&message, policy),
                2,
                "{items} items, policy {policy:?}"
            );
        }
    }

    let mut order = generated_order("alloc-", 42, 1);
    order.delivery.address = "a".repeat(25).into();
    order.items[0].name = "n".repeat(200).into();
    let message = serde_json::to_vec(&order).unwrap();
    assert_eq!(allocations(&message, UnknownFields::Reject), 2 + 2);
}
