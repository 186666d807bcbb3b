//! Whatever a broker (or anything else on its port) answers, and any
//! record batch: every decoder returns a value or an error, never panics,
//! never allocates more than the input can describe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trident_kafka_wire as wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::frame_len(data);
    if let Ok((_, body)) = wire::answer(data) {
        let _ = wire::metadata_answer(body);
        let _ = wire::produce_answer(body);
        let _ = wire::init_producer_id_answer(body);
    }
    let _ = wire::batch::decode(data);
    // The same bytes with a batch's length and CRC made right, so that
    // the records behind the checks are reached too.
    if data.len() >= 61 {
        let mut batch = data.to_vec();
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        batch[16] = 2;
        let crc = wire::batch::crc(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let _ = wire::batch::decode(&batch);
    }
});
