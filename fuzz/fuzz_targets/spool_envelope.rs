//! Arbitrary bytes as an `.env` record, through the parse spool recovery uses: it must
//! never panic, and a record it keeps must survive the spool's own write and read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srs_relay::fuzzing::{encode_envelope, parse_envelope};

/// The id the record must name (the seeds use it): a queue id as `Spool::new_id` makes.
const ID: &str = "0190f3c2a1b2c30000000a1b2c3d4e5f60";

fuzz_target!(|data: &[u8]| {
    let Some(env) = parse_envelope(data, ID) else {
        return;
    };
    assert_eq!(env.id, ID);
    // What delivery asks of a recovered envelope.
    let _ = (env.is_done(), env.pending().count());
    let bytes = encode_envelope(&env).expect("a parsed envelope encodes");
    let again = parse_envelope(&bytes, ID).expect("the spool cannot read back what it wrote");
    assert_eq!(again, env);
});
