//! Event publishing under conditions the review of issue 11 named: post-operations at
//! DISPATCH_LEVEL, and a sender that read the subscriber's slot before that subscriber
//! disconnected and another client took a slot.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod port_support;
mod support;

use std::time::Duration;

use ctxguard_companion::port::{Client, Stats};
use ctxguard_protocol::{ConnectContext, Event, MAX_EVENT_NAME_UNITS, PROTOCOL_VERSION};
use fltemu::{DISPATCH_LEVEL, FILTER_MESSAGE_HEADER_SIZE, OpenOptions};
use port_support::{assert_clean, connect_raw, connector, load, unload_clean};

/// Polls GetStats (for up to 5 s) until `done` holds; returns the last answer.
fn settled(client: &Client, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = client.stats().unwrap();
        if done(&stats) || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Post-cleanup and post-close at DISPATCH_LEVEL (A9 allows it): ctxguard registers neither,
/// and publishes from post-create (PASSIVE_LEVEL) and pre-cleanup (at most APC_LEVEL), so every
/// event is still read from the paged name at a legal IRQL and delivered, none dropped, and
/// fltemu records no IRQL violation.
#[test]
fn events_with_post_operations_at_dispatch_are_published_at_apc_or_below() {
    let harness = load();
    let emulator = &harness.emulator;
    let watcher = Client::connect(&connector(emulator), true).unwrap();
    let reader = Client::connect(&connector(emulator), false).unwrap();
    emulator.set_post_operation_irql(Some(DISPATCH_LEVEL));
    for index in 0..3 {
        let options = OpenOptions { pid: 500 + index, ..OpenOptions::default() };
        let file = emulator.open(harness.volume, &format!("\\dispatch{index}.txt"), &options).unwrap();
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
    let kinds: Vec<(&str, u32)> = (0..6).map(|_| watcher.next_event().unwrap()).map(|event| (event.kind, event.pid)).collect();
    assert_eq!(kinds, vec![("open", 500), ("close", 500), ("open", 501), ("close", 501), ("open", 502), ("close", 502)]);
    let stats = settled(&reader, |stats| stats.events_sent == 6);
    assert_eq!((stats.events_sent, stats.events_dropped, stats.events_queued), (6, 0, 0), "{stats:?}");
    emulator.set_post_operation_irql(None);
    assert_clean(emulator);
    drop(watcher);
    drop(reader);
    unload_clean(emulator);
}

/// The sender is held inside FltSendMessage's entry, after the driver chose the subscriber's
/// slot and before Filter Manager reads the port from it; meanwhile the subscriber disconnects
/// (its slot is NULLed) and a plain client connects (the first free slot). The held event must
/// not reach that client: it is counted as dropped.
#[test]
fn a_sender_held_across_a_disconnect_does_not_send_to_the_next_client() {
    let harness = load();
    let emulator = &harness.emulator;
    let subscriber = Client::connect(&connector(emulator), true).unwrap();
    emulator.hold_at("FltSendMessage");
    let file = emulator.open(harness.volume, "\\held.txt", &OpenOptions::default()).unwrap();
    assert!(emulator.wait_held(Duration::from_secs(10)), "the sender did not reach FltSendMessage");
    drop(subscriber);
    let plain = ConnectContext { min_version: 1, max_version: PROTOCOL_VERSION, flags: 0 }.encode();
    let next = connect_raw(emulator, &plain, 31).expect("a slot is free");
    let capacity = FILTER_MESSAGE_HEADER_SIZE + Event::encoded_len(MAX_EVENT_NAME_UNITS);
    let received = std::thread::scope(|scope| {
        let listener = scope.spawn(|| next.get_message(capacity, Some(Duration::from_secs(2))));
        // The listener waits in FilterGetMessage before the sender goes on.
        std::thread::sleep(Duration::from_millis(200));
        emulator.release_hold();
        listener.join().unwrap()
    });
    assert!(received.is_err(), "the next client in the slot received the old subscriber's event: {received:?}");
    let reader = Client::connect(&connector(emulator), false).unwrap();
    let stats = settled(&reader, |stats| stats.events_sent + stats.events_dropped == 1);
    assert_eq!((stats.events_sent, stats.events_dropped), (0, 1), "{stats:?}");
    emulator.cleanup(&file).unwrap();
    emulator.close(file).unwrap();
    assert_clean(emulator);
    drop(next);
    drop(reader);
    unload_clean(emulator);
}
