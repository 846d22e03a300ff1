//! The container engine's HTTP answer over its unix socket (`engine::http`): whatever the
//! bytes, the parse ends with an error, a need for more, or a body within the cap, and never
//! panics. The first byte says whether the engine has closed the connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::engine::fuzzing::engine_answer;

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&first, received)) = data.split_first() else {
        return;
    };
    if let Ok(Some(body)) = engine_answer(received, first & 1 == 1, CAP) {
        assert!(
            body.len() <= CAP,
            "a body of {} bytes passed a cap of {CAP}",
            body.len()
        );
        assert!(
            body.len() <= received.len(),
            "more body than bytes received"
        );
    }
});
