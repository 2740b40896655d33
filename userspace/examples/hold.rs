fn main() {
    let _dp = portier::dataplane::Dataplane::load_for_test(1024).expect("load");
    std::thread::sleep(std::time::Duration::from_secs(40));
}
