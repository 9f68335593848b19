#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = whepcast::fuzz::advertise_structured(&mut arbitrary::Unstructured::new(data));
});
