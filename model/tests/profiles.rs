//! The profile table: the eras the model knows, found by name and printed by name.

use model::KernelProfile;

#[test]
fn every_era_is_listed_found_by_name_and_printed_as_it() {
    let all = KernelProfile::all();
    let names: Vec<&str> = all.iter().map(|p| p.name).collect();
    assert_eq!(names, ["6.1", "6.12", "6.18"], "oldest first");
    assert_eq!(
        all,
        vec![
            KernelProfile::v6_1(),
            KernelProfile::v6_12(),
            KernelProfile::v6_18()
        ]
    );
    for p in &all {
        assert_eq!(KernelProfile::by_name(p.name).as_ref(), Some(p));
        assert_eq!(p.to_string(), p.name);
    }
    assert_eq!(KernelProfile::by_name("6.13"), None);
    assert_eq!(KernelProfile::default(), KernelProfile::v6_18());
}
