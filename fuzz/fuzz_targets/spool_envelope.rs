//! Arbitrary bytes as a spool file, through the parses spool recovery uses: as a queue file
//! (`<id>.q`: envelope line, then the message), as an updated envelope (`<id>.state`) and
//! as a version 1 `.env` being converted. None may panic, and what one keeps must survive
//! the spool's own write and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srs_relay::fuzzing::{encode_spool_file, parse_envelope, parse_queue_file};

/// The id the record must name (the seeds use it): a queue id as `Spool::new_id` makes.
const ID: &str = "0190f3c2a1b2c30000000a1b2c3d4e5f60";

fuzz_target!(|data: &[u8]| {
    if let Some((env, message)) = parse_queue_file(data, ID) {
        assert_eq!(env.id, ID);
        // What delivery asks of a recovered envelope.
        let _ = (env.is_done(), env.pending().count());
        let bytes = encode_spool_file(&env, Some(message)).expect("a parsed envelope encodes");
        let (again, message_again) =
            parse_queue_file(&bytes, ID).expect("the spool cannot read back what it wrote");
        assert_eq!(again, env);
        assert_eq!(message_again, message);
    }
    for version in [1, 2] {
        if let Some(env) = parse_envelope(data, ID, version) {
            assert_eq!(env.id, ID);
            let bytes = encode_spool_file(&env, None).expect("a parsed envelope encodes");
            let again = parse_envelope(&bytes, ID, 2).expect("an updated envelope reads back");
            assert_eq!(again, env);
        }
    }
});
