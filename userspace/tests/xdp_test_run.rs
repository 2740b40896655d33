use portier::dataplane::*;

#[test]
fn smoke() {
    let dp = Dataplane::load_for_test(1024).unwrap_or_else(|e| panic!("{e}: {:?}", e));
    let out = dp.test_run("portier_lb", &[0u8; 60], 1).unwrap();
    println!("{out:?} {:?}", dp.reasons().unwrap());
}
