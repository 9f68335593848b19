#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = whepcast::fuzz::whep_query_structured(&mut arbitrary::Unstructured::new(data));
});
