//! Action bodies: `{"name": ...}` (get/delete) and the training_data command (DoExchange
//! descriptor, `X-FeatherStore-Command`), resolved against specs named as it asks.
#![no_main]

use featherstore_core::action::parse_name;
use featherstore_core::{FeatureSetSpec, TrainingDataCommand};
use featherstore_fuzz::spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_name(data);
    let Ok(command) = TrainingDataCommand::from_json(data) else {
        return;
    };
    let json = serde_json::to_vec(&command).expect("a command serializes");
    assert_eq!(
        TrainingDataCommand::from_json(&json).ok(),
        Some(command.clone())
    );
    let Ok(names) = command.set_names() else {
        return;
    };
    let specs: Vec<FeatureSetSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| FeatureSetSpec {
            name: name.clone(),
            ..spec(i as u8)
        })
        .collect();
    let specs: Vec<&FeatureSetSpec> = specs.iter().collect();
    let input = ["user_id".to_string(), "event_timestamp".to_string()];
    if let Ok(outputs) = command.resolve(&specs, &input) {
        for output in outputs {
            assert!(output.feature < specs[output.set].features.len());
        }
    }
});
