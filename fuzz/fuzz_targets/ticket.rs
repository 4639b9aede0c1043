//! DoGet tickets and the HTTP online/history bodies (`OnlineRequest`/`OnlineTicket`/
//! `HistoryTicket::from_json`): parsing, time ranges, entity keys, the column-wise entity rows
//! of reads across sets.
#![no_main]

use featherstore_core::ticket::{HistoryTicket, OnlineRequest, OnlineTicket, Ticket};
use featherstore_core::{EntityKeys, EntityType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ticket) = Ticket::from_json(data) {
        match &ticket {
            Ticket::Online(online) => {
                for entity_type in [EntityType::String, EntityType::Int64] {
                    if let Ok(keys) = EntityKeys::from_json(entity_type, &online.entities) {
                        assert_eq!(keys.len(), online.entities.len());
                    }
                }
            }
            Ticket::MultiOnline(multi) => {
                if let Ok(rows) = multi.rows() {
                    for (column, values) in &multi.entities {
                        assert_eq!(values.len(), rows);
                        for entity_type in [EntityType::String, EntityType::Int64] {
                            if let Ok(keys) = EntityKeys::from_json_column(entity_type, column, values) {
                                assert_eq!(keys.len(), rows);
                            }
                        }
                    }
                }
            }
            Ticket::History(history) => {
                if let Ok((Some(start), Some(end))) = history.time_range() {
                    assert!(start <= end);
                }
            }
        }
        // What the server accepted, written back, is the same ticket.
        let json = serde_json::to_vec(&ticket).expect("a ticket serializes");
        assert_eq!(Ticket::from_json(&json).expect("its JSON parses"), ticket);
    }
    let _ = OnlineTicket::from_json(data);
    let _ = OnlineRequest::from_json(data);
    if let Ok(history) = HistoryTicket::from_json(data) {
        let _ = history.time_range();
    }
});
